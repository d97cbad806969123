"""Synthetic MATH-style samples shared by the benchmarks (deterministic: seeded, no files, no network).

A sample is what a policy produced for one prompt: a question, its reference answer and a solution
text whose last ``\\boxed{}`` holds the final answer. Answers take the forms MATH ground truths take
(integers, fractions, radicals, ordered pairs, decimals, negative numbers), and "equivalent but
written differently" answers (``0.5`` for ``\\frac{1}{2}``) are there on purpose: they are what a
string checker rejects and math-verify accepts.

The GRPO-shaped batch: ``prompts`` x ``samples`` (512 x 8 by default). The bundled data
(``data_prep/assets/``) holds references, not sampled policy outputs, so the duplicate rate cannot
be measured from it; it is chosen and stated instead: per prompt, the number of distinct final
answers k is drawn uniformly from {2, 3, 4} (one of them the reference, one possibly an equivalent
rewrite, the rest wrong), and each of the 8 samples draws one of the k uniformly. Expected distinct
(question, answer) pairs per prompt: k(1 - (1 - 1/k)^8) = 1.99 / 2.88 / 3.60, about 2.8 of 8 (2.8x
redundancy). Solution texts differ between samples (different reasoning, same final answer), as
they do in real rollouts; only the extracted answer repeats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    question: str
    ground_truth: str  # MATH style, without \boxed
    solution: str
    answer: str  # the content of the solution's last \boxed{} (what the verifier is shown)
    kind: str = "normal"  # normal | pathological


_REASONING = (
    "We first rewrite the expression and collect like terms.",
    "Let us set up the equation from the statement.",
    "Substituting the known values gives a simpler form.",
    "Checking the boundary cases shows nothing changes.",
    "Multiplying both sides by the denominator clears the fraction.",
    "By symmetry the two cases contribute equally.",
    "We simplify step by step and keep track of the signs.",
    "A quick sanity check with small numbers agrees.",
)


def _reference(rng: random.Random, i: int) -> tuple[str, str, list[str]]:
    """(question text, reference answer, equivalent rewrites) for problem ``i``."""
    form = i % 6
    if form == 0:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return f"compute {a} + {b}.", str(a + b), []
    if form == 1:
        p, q = rng.choice([(1, 2), (3, 4), (1, 4), (2, 5), (3, 8), (7, 10)])
        return f"write {p}/{q} as a fraction.", f"\\frac{{{p}}}{{{q}}}", [str(p / q), f"{p}/{q}"]
    if form == 2:
        a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 7])
        return f"simplify sqrt({a * a * b}).", f"{a}\\sqrt{{{b}}}", [f"\\sqrt{{{a * a * b}}}"]
    if form == 3:
        x, y = rng.randint(-9, 9), rng.randint(-9, 9)
        return f"find the intersection point of the two lines (case {i}).", f"({x}, {y})", [f"({x},{y})"]
    if form == 4:
        a = rng.randint(1, 40)
        return f"what is {a} - {a + 7}?", str(-7), ["-7.0"]
    a = rng.randint(1, 99)
    return f"what is {a}/4 as a decimal?", f"{a / 4:g}", [f"\\frac{{{a}}}{{4}}"]


def _wrong(rng: random.Random, reference: str, k: int) -> str:
    return f"{reference}+{k}" if not reference.lstrip("-").isdigit() else str(int(reference) + k)


def _solution(rng: random.Random, answer: str) -> str:
    steps = " ".join(rng.choice(_REASONING) for _ in range(rng.randint(1, 6)))
    return f"{steps} So the answer is $\\boxed{{{answer}}}$."


def math_problems(n: int, tag: str, seed: int = 0) -> list[tuple[str, str, list[str]]]:
    """``n`` problems as (question, reference, equivalent rewrites); ``tag`` makes the questions
    unique to one benchmark pass (no server prefix-cache or client-cache carry-over between passes)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text, ref, equivalents = _reference(rng, i)
        out.append((f"[{tag}] Problem {i}: {text}", ref, equivalents))
    return out


def grpo_batch(prompts: int, samples: int, tag: str, seed: int = 0) -> list[Sample]:
    """``prompts`` x ``samples`` rollouts whose final answers repeat (distribution: module docstring)."""
    rng = random.Random(seed + 1)
    batch = []
    for question, ref, equivalents in math_problems(prompts, tag, seed):
        k = rng.randint(2, 4)
        answers = [ref]
        if equivalents and len(answers) < k:
            answers.append(rng.choice(equivalents))
        while len(answers) < k:
            answers.append(_wrong(rng, ref, len(answers)))
        for _ in range(samples):
            answer = rng.choice(answers)
            batch.append(Sample(question, ref, _solution(rng, answer), answer))
    return batch


def distinct_batch(prompts: int, samples: int, tag: str, seed: int = 0) -> list[Sample]:
    """Same size and shape, but every (question, answer) pair differs: nothing to deduplicate."""
    rng = random.Random(seed + 2)
    batch = []
    for question, ref, _ in math_problems(prompts, tag, seed):
        for j in range(samples):
            answer = ref if j == 0 else _wrong(rng, ref, j)
            batch.append(Sample(question, ref, _solution(rng, answer), answer))
    return batch


def distinct_pairs(batch: list[Sample]) -> int:
    return len({(s.question, s.answer) for s in batch})


# ---------------------------------------------------------------------------------------------
# Pathological answers: what degenerate policies emit mid-run. Each one makes math-verify (sympy)
# run for seconds to forever: nested powers and factorial towers are evaluated as exact integers;
# 100k-character outputs ending in one huge boxed expression make the LaTeX parser grind.
# ---------------------------------------------------------------------------------------------
def _long_sum() -> str:
    return "Expanding everything: $\\boxed{" + "x+" * 49_990 + "1}$"


def _long_product() -> str:
    return "The product is $\\boxed{" + "*".join(["9999999"] * 12_000) + "}$"


def _deep_parens() -> str:
    return "$\\boxed{" + "(" * 2000 + "1" + ")" * 2000 + "}$" + " " * 96_000


PATHOLOGICAL = {
    "nested power 9^9^9^9": lambda: "So the answer is $\\boxed{9^{9^{9^{9}}}}$.",
    "power tower 2^2^2^2^2^2": lambda: "Hence $\\boxed{2^{2^{2^{2^{2^{2}}}}}}$.",
    "power 10^10^10": lambda: "It is $\\boxed{10^{10^{10}}}$.",
    "factorial (10^10)!": lambda: "The count is $\\boxed{(10^{10})!}$.",
    "factorial tower ((100!)!)!": lambda: "The count is $\\boxed{((100!)!)!}$.",
    "100k chars: sum of 50k terms": _long_sum,
    "100k chars: product of 12k numbers": _long_product,
    "100k chars: 2000 nested parens": _deep_parens,
}


def rule_batch(n: int, pathological_fraction: float = 0.01, seed: int = 0) -> list[Sample]:
    """``n`` MATH-style samples (about 60% correct, some in equivalent forms), of which
    ``round(n * pathological_fraction)`` are pathological, spread evenly through the batch."""
    rng = random.Random(seed + 3)
    problems = math_problems(n, "rule", seed)
    n_bad = round(n * pathological_fraction)
    bad_at = {round((j + 0.5) * n / n_bad) for j in range(n_bad)} if n_bad else set()
    makers = list(PATHOLOGICAL.items())
    batch = []
    for i, (question, ref, equivalents) in enumerate(problems):
        if i in bad_at:
            name, make = makers[len([s for s in batch if s.kind == "pathological"]) % len(makers)]
            batch.append(Sample(question, ref, make(), answer=name, kind="pathological"))
            continue
        roll = rng.random()
        if roll < 0.45:
            answer = ref
        elif roll < 0.6 and equivalents:
            answer = rng.choice(equivalents)
        else:
            answer = _wrong(rng, ref, rng.randint(1, 5))
        batch.append(Sample(question, ref, _solution(rng, answer), answer))
    return batch
