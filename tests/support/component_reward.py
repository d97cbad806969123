"""A reward for testing per-component advantages and the calibration monitor on the real trainer: its
components and its stated "confidence" vary on ANY text, so the tiny random model's rollouts give the
estimator and the monitor something to work on (the method rewards give all-zero components and no
parsed confidence on random text).

Loaded by verl as a custom reward function file (``reward.custom_reward_function.path=<this file>``).
"""


def parts(text: str) -> dict[str, float]:
    even = float(len(text) % 2 == 0)
    letters = sum(ch.isalpha() for ch in text) / max(len(text), 1)
    return {"even_term": even, "letter_term": letters, "confidence": letters, "acc": even}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    out = parts(solution_str or "")
    return {"score": out["even_term"] + 2.0 * out["letter_term"], **out}
