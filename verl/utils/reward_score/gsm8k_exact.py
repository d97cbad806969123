"""``openai/gsm8k``: upstream verl's GSM8K rule (the number after ``####``) in our result shape."""

from verl.utils.reward_score import gsm8k


def compute_score(data_source, solution_str, ground_truth, extra_info=None, method="strict", format_score=0.0, score=1.0):
    value = gsm8k.compute_score(solution_str, ground_truth, method=method, format_score=format_score, score=score)
    return {"score": float(value), "acc": float(value == score)}
