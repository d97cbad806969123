"""Run as a script: score a spread of upstream verl's data sources through
``verl.utils.reward_score.default_compute_score`` and through upstream's own reward managers, and print
the results as JSON on the last line of stdout (type names and values), so that a run with our plugin can be compared with a run
without it (``VERL_USE_EXTERNAL_PLUGINS=none``). Used by tests/integration/test_upstream_compat.py.

    python tests/support/upstream_probe.py TOKENIZER_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys

CODE = "```python\nprint(int(input()) + 1)\n```"
CODE_TESTS = json.dumps({"inputs": ["1\n", "5\n"], "outputs": ["2\n", "6\n"]})
CODE_HALF = json.dumps({"inputs": ["1\n", "5\n"], "outputs": ["2\n", "7\n"]})

# (data_source, solution_str, ground_truth): right, wrong and unparseable answers per family
CALLS = [
    ("openai/gsm8k", "She earns 8 + 64 = 72.\n#### 72", "72"),
    ("openai/gsm8k", "#### 71", "72"),
    ("openai/gsm8k", "seventy-two", "72"),
    ("lighteval/MATH", "so the answer is $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("DigitalLearningGmbH/MATH-lighteval", "\\boxed{3}", "4"),
    ("HuggingFaceH4/MATH-500", "We get \\boxed{10}.", "10"),
    ("numina_cn_k12", "\\boxed{\\frac{1}{2}}", "\\frac12"),
    ("numina_olympiads", "\\boxed{5}", "6"),
    ("numina_synthetic_math", "no answer here", "6"),
    ("math_dapo", "Answer: 33", "33"),
    ("math", "the result is \\boxed{7}", "8"),
    ("aime24", "Answer: 204", "204"),
    ("aime2025", "\\boxed{\\frac{1}{2}}", "0.5"),
    ("codecontests", CODE, CODE_TESTS),
    ("apps", CODE, CODE_HALF),
    ("searchR1_nq", "<answer>Paris</answer>", {"target": ["Paris"]}),
    ("hiyouga/geometry3k", "<think>x</think> \\boxed{3}", "3"),  # needs mathruler: both raise alike
    ("no_such_source", "x", "y"),
]
# Batches for upstream's reward managers: sources whose results are floats (prime does float(result[0])).
BATCH = [CALLS[0], CALLS[1], CALLS[3], CALLS[4], CALLS[6], CALLS[7]]


def describe(value):
    """A JSON-comparable description: the type name and the value (dict values described likewise)."""
    if isinstance(value, dict):
        return {"type": "dict", "items": {k: describe(v) for k, v in sorted(value.items())}}
    return {"type": type(value).__name__, "value": value}


def direct_calls():
    from verl.utils.reward_score import default_compute_score

    out = []
    for source, solution, truth in CALLS:
        try:
            out.append(describe(default_compute_score(source, solution, truth)))
        except NotImplementedError:
            out.append({"raises": "NotImplementedError"})
        except Exception as e:  # noqa: BLE001 - compared between the two runs
            out.append({"raises": type(e).__name__})
    return out


def batch(tokenizer):
    import numpy as np
    import torch

    from verl import DataProto

    prompt_ids = torch.tensor([tokenizer.encode("Solve:")] * len(BATCH))
    encoded = [tokenizer.encode(solution) for _, solution, _ in BATCH]
    width = max(map(len, encoded))
    responses = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in encoded])
    response_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded])
    data = DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": responses,
                 "attention_mask": torch.cat([torch.ones_like(prompt_ids), response_mask], dim=1)},
        non_tensors={"data_source": np.array([s for s, _, _ in BATCH], dtype=object),
                     "reward_model": np.array([{"ground_truth": t} for _, _, t in BATCH], dtype=object),
                     "extra_info": np.array([{} for _ in BATCH], dtype=object)},
    )
    return data


def last_token_rewards(reward_tensor, data) -> list[float]:
    prompt_length = data.batch["prompts"].shape[-1]
    lengths = data.batch["attention_mask"][:, prompt_length:].sum(dim=-1)
    return [float(reward_tensor[i, int(lengths[i]) - 1]) for i in range(len(lengths))]


def managers(tokenizer):
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager as LoopNaive
    from verl.workers.reward_manager.naive import NaiveRewardManager as LegacyNaive
    from verl.workers.reward_manager.prime import PrimeRewardManager

    data = batch(tokenizer)
    out = {"prime": last_token_rewards(PrimeRewardManager(tokenizer, num_examine=0)(data), data),
           "legacy_naive": last_token_rewards(LegacyNaive(tokenizer, num_examine=0)(data), data)}
    loop = asyncio.new_event_loop()  # the manager binds the current loop (prime closed the one it made)
    asyncio.set_event_loop(loop)
    loop_naive = LoopNaive(config=None, tokenizer=tokenizer, compute_score=None)
    out["reward_loop_naive"] = [describe(loop.run_until_complete(loop_naive.run_single(data[i:i + 1]))["reward_score"])
                                for i in range(len(data))]
    loop.close()
    return out


def main() -> None:
    from transformers import AutoTokenizer

    import verl.utils.reward_score as scores

    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    # the last line: the managers print to stdout on their own
    print("\n" + json.dumps({"dispatcher": scores.default_compute_score.__module__, "calls": direct_calls(),
                      "managers": managers(tokenizer)}))


if __name__ == "__main__":
    main()
