"""Chat messages for C3PO's teacher, completion model and judge, and the re-ask after an unusable reply.

Builders return chat messages (``[{"role", "content"}]``), always a single user turn: some small
models' chat templates reject a system turn, and one turn reads the same on every template. Where a
reply format is required, the prompt states it after the line ``FORMAT_HEADING`` ("Reply in exactly
this format:"); ``reask_messages`` finds that block again to restate it. The replies are read by
``verlkit.c3po.parsers``; ``verlkit.c3po.constraints`` gives the matching structured-output
expressions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from verlkit.c3po.parsers import check_count

if TYPE_CHECKING:
    from verlkit.c3po.feedback import Feedback

__all__ = [
    "FORMAT_HEADING",
    "Messages",
    "baseline_messages",
    "categories_messages",
    "cot_messages",
    "in_context_messages",
    "in_scope_prompts_messages",
    "judge_messages",
    "near_scope_prompts_messages",
    "reask_messages",
    "revise_messages",
    "swap_judge_score",
]

Messages = list[dict[str, str]]

# Every builder that expects a format states it after this heading, as lines without a blank line
# in between; ``reask_messages`` finds the block again to restate it.
FORMAT_HEADING = "Reply in exactly this format"

# The worked example shared by the teacher prompts: neutral, and unlike any bundled feedback.
_EXAMPLE_FEEDBACK = "Use metric units when giving cooking instructions"
_EXAMPLE_DOMAIN = "giving cooking instructions"


def _user(content: str) -> Messages:
    return [{"role": "user", "content": content}]


def _numbered_template(count: int, what: str) -> list[str]:
    if count <= 3:
        return [f"{i}. <{what}>" for i in range(1, count + 1)]
    return [f"1. <{what}>", f"2. <{what}>", "...", f"{count}. <{what}>"]


def _format_block(lines: Sequence[str], note: str = "") -> str:
    return f"{FORMAT_HEADING}{note}:\n" + "\n".join(lines)


def _feedback_intro(feedback: Feedback) -> str:
    return ("I am writing test requests for an AI assistant that received this feedback:\n"
            f"FEEDBACK: {feedback.content}\n"
            f"It applies to: {feedback.domain}")


# ---------------------------------------------------------------------------------------------
# Teacher: categories and prompts
# ---------------------------------------------------------------------------------------------
def categories_messages(feedback: Feedback, k: int) -> Messages:
    """Ask for k categories of requests, each a little wider than the feedback's domain."""
    check_count(k, "k")
    fmt = _format_block(["THOUGHTS: <one or two sentences>", "CATEGORIES:",
                         *_numbered_template(k, "category"), "REVISED_CATEGORIES:",
                         *_numbered_template(k, "category")])
    return _user(f"""{_feedback_intro(feedback)}

Name {k} diverse categories of requests that users send to an assistant. Each category must be a bit \
broader than "{feedback.domain}": it should contain requests where the feedback applies and also \
related requests where it does not. Make the categories differ from each other and describe each \
in a short phrase.

Think briefly first, then write a draft list, then a revised list that fixes any category that is \
too narrow, too broad or repeated. The revised list must have exactly {k} items. Plain text, no \
markdown.

{fmt}

Example with 3 categories, for the feedback "{_EXAMPLE_FEEDBACK}" (applies to: {_EXAMPLE_DOMAIN}):
THOUGHTS: Cooking instructions sit inside wider food topics, which also hold requests without any \
measurements.
CATEGORIES:
1. Recipes
2. Baking
3. Food
REVISED_CATEGORIES:
1. Home cooking and recipe questions
2. Baking bread, cakes and pastries
3. Meal planning and grocery shopping""")


def in_scope_prompts_messages(feedback: Feedback, category: str, n: int) -> Messages:
    """Ask for n requests inside both the category and the feedback's domain (a numbered list only)."""
    check_count(n, "n")
    fmt = _format_block(_numbered_template(n, "request"), " (only the numbered list, nothing before or after it)")
    return _user(f"""{_feedback_intro(feedback)}

Write {n} different requests a user could send to the assistant. Every request must belong to the \
category "{category}" and also fall within "{feedback.domain}", so that the feedback clearly \
applies to it. Each request stands on its own, is one to three short sentences long and reads like \
something a real user would type. Invent concrete details: names, places, dates, numbers. Plain \
text, no markdown.

{fmt}

Example with 2 requests, for the feedback "{_EXAMPLE_FEEDBACK}" (applies to: {_EXAMPLE_DOMAIN}) \
and the category "Baking":
1. How long should I bake a sponge cake in a 9-inch pan, and at what oven temperature?
2. My grandmother's rye bread recipe is written in cups. Can you walk me through making it on Saturday?""")


def near_scope_prompts_messages(feedback: Feedback, category: str, n: int) -> Messages:
    """Ask for n requests in the category but outside the domain (draft, then a corrected list)."""
    check_count(n, "n")
    fmt = _format_block(["THOUGHTS: <one or two sentences on what is inside and outside the domain>",
                         "PROMPTS:", *_numbered_template(n, "request"),
                         "REVISED_PROMPTS:", *_numbered_template(n, "request")])
    return _user(f"""{_feedback_intro(feedback)}

Write {n} different requests that belong to the category "{category}" but clearly fall OUTSIDE \
"{feedback.domain}", so the feedback must not be applied to them. Stay close to the topic: these \
are related requests that a careless assistant could mistake for ones where the feedback applies. \
Each request stands on its own, is one to three short sentences long and has invented concrete \
details. Plain text, no markdown.

Think briefly first, then write a draft list, then check every draft request: replace any that \
falls inside "{feedback.domain}". The revised list must have exactly {n} items.

{fmt}

Example with 2 requests, for the feedback "{_EXAMPLE_FEEDBACK}" (applies to: {_EXAMPLE_DOMAIN}) \
and the category "Food and drink":
THOUGHTS: Questions about food history, restaurants or drinks involve no cooking instructions.
PROMPTS:
1. What is the history of the croissant?
2. How do I make pancakes from scratch for four people?
REVISED_PROMPTS:
1. What is the history of the croissant?
2. Which wines go well with a mushroom risotto at a dinner party?""")


# ---------------------------------------------------------------------------------------------
# Completion model
# ---------------------------------------------------------------------------------------------
def baseline_messages(prompt: str) -> Messages:
    """The request as it is: the original model's own behaviour."""
    return _user(prompt)


def revise_messages(feedback: Feedback, prompt: str, baseline: str) -> Messages:
    """Ask to rewrite the baseline response so that it carries out the feedback's effect."""
    fmt = _format_block(["EXPLANATION: <two or three sentences on what has to change>",
                         "IMPROVED_RESPONSE: <the whole rewritten response, and nothing after it>"])
    return _user(f"""Below are a user's request and an earlier response to it. Rewrite the response so \
that it follows the feedback, and keep what was good about it. Write the new response as the \
response itself, addressed to the user, without comments about the rewrite.

PROMPT:
{prompt}

PREVIOUS_RESPONSE:
{baseline}

FEEDBACK: {feedback.effect}

{fmt}""")


def in_context_messages(feedback: Feedback, prompt: str) -> Messages:
    """The request with the feedback attached, for the model to apply when relevant."""
    return _user(f"{prompt}\n\n(If it applies, follow this feedback: {feedback.content})")


def cot_messages(feedback: Feedback, prompt: str) -> Messages:
    """The request with the feedback; the model first says whether it applies, then answers."""
    fmt = _format_block(["EXPLANATION: <one or two sentences on whether the feedback applies to this request>",
                         "RESPONSE: <your response to the request>"])
    return _user(f"""{prompt}

(You received this feedback earlier: "{feedback.content}". First decide whether it applies to the \
request above, and follow it only if it does.)

{fmt}""")


# ---------------------------------------------------------------------------------------------
# Judge
# ---------------------------------------------------------------------------------------------
def judge_messages(feedback: Feedback, prompt: str, response_1: str, response_2: str) -> Messages:
    """Ask which response better carries out the feedback's effect, on a 1..5 scale."""
    fmt = _format_block(["EXPLANATION: <one to three sentences comparing the two responses>",
                         "BETTER_RESPONSE: <one number from 1 to 5>"])
    return _user(f"""Compare two responses to the same request. Judge only which one better carries out \
this feedback: "{feedback.effect}". Do not reward other qualities (accuracy, style, length) unless \
the feedback asks for them.

PROMPT:
{prompt}

RESPONSE_1:
{response_1}

RESPONSE_2:
{response_2}

FEEDBACK: {feedback.effect}

Scale:
1 = RESPONSE_1 carries out the feedback much better
2 = RESPONSE_1 carries it out somewhat better
3 = both equally well, or neither carries it out
4 = RESPONSE_2 carries it out somewhat better
5 = RESPONSE_2 carries it out much better

{fmt}""")


def swap_judge_score(score: int) -> int:
    """The score as if the two responses had been shown in the other order (for position swaps)."""
    return 6 - score


# ---------------------------------------------------------------------------------------------
# Re-asking
# ---------------------------------------------------------------------------------------------
def _format_block_of(messages: Sequence[dict[str, str]]) -> str | None:
    """The format lines stated in the latest user turn that has them (re-asks restate them too)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        lines = str(message.get("content", "")).split("\n")
        for start, line in enumerate(lines):
            if line.startswith(FORMAT_HEADING):
                block = []
                for follow in lines[start + 1:]:
                    if not follow.strip():
                        break
                    block.append(follow)
                if block:
                    return "\n".join(block)
    return None


def reask_messages(messages: Sequence[dict[str, str]], reply: str, problem: str, *,
                   max_reply_chars: int = 4000) -> Messages:
    """The conversation, the unusable reply, and a user turn saying what was wrong and restating the
    format. A runaway reply is cut to ``max_reply_chars`` so the re-ask still fits the context."""
    shown = reply if isinstance(reply, str) else ""
    if len(shown) > max_reply_chars:
        shown = shown[:max_reply_chars] + "\n[...]"
    correction = f"That reply could not be used: {str(problem).strip().rstrip('.')}."
    block = _format_block_of(messages)
    if block:
        correction += f"\nAnswer again.\n{FORMAT_HEADING}, with nothing before or after it:\n{block}"
    else:
        correction += "\nPlease answer again."
    return [*(dict(m) for m in messages), {"role": "assistant", "content": shown},
            {"role": "user", "content": correction}]
