"""Our prompts as the rewards sent them before they became template files, written out by hand: the
expected values of the byte-identity and payload tests (never computed by the code under test)."""

TINYV_PROMPT = """Your task is to catch false negatives of an automatic answer checker. The checker compares a model's final answer with the reference answer and sometimes rejects answers that are actually correct, because they are written differently (another but equivalent form, different units or notation, extra words, rounding, a different order of a set, and similar). Decide whether the model's answer is mathematically equivalent to the reference answer for this question. Do not solve the problem again, and do not accept an answer that is actually different.

<question>
What is 1/2?
</question>

<ground_truth_answer>
0.5
</ground_truth_answer>

<model_answer>
\\frac{1}{2}
</model_answer>

Reply with a single word: True if the model's answer is correct, False otherwise."""

RUBRIC_PROMPT = """You are a teacher grading a student's written solution to a math problem. The solution is worth 10 points in total.

Read the problem, the scoring criteria and the student's solution below. Award points strictly according to the criteria: credit each step the criteria reward only if the solution actually justifies it, and do not give credit for a correct final answer reached by unjustified or wrong reasoning.

Question:
What is 1/2?

Scoring Criteria:
10 points: 0.5.

Student's Answer:
It is \\boxed{0.5}.

Explain your grading briefly, criterion by criterion. Then finish with one line of the form
Total Score: <points>/10"""

CGP_PROMPT = """Answer the multiple-choice question below. Think briefly, then finish with one last sentence of exactly this form:
the answer is N with confidence C
where N is the number of the option you choose (1 to 4) and C is your confidence, from 0 to 100, that your answer is correct. Write nothing after that sentence.

Question: Which organ makes insulin?
Options:
(1) Liver
(2) Pancreas
(3) Kidney
(4) Spleen
Hint: Think about islet cells.
Answer:"""

CGP_OPTIONS = "(1) Liver\n(2) Pancreas\n(3) Kidney\n(4) Spleen"
