"""``openai/gsm8k``: upstream verl's GSM8K rule (the number after ``####``) in our result shape."""

from typing import ClassVar, Literal

from verl.utils.reward_score import gsm8k
from verl.utils.reward_score.options import RewardOptions, parse_options


class GSM8KOptions(RewardOptions):
    """``reward_kwargs.gsm8k.*``: upstream's own knobs."""

    reward_name: ClassVar[str] = "gsm8k"
    method: Literal["strict", "flexible"] = "strict"
    format_score: float = 0.0  # a well-formed but wrong answer
    score: float = 1.0  # a right answer


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options):
    opts = parse_options(GSM8KOptions, options)
    value = gsm8k.compute_score(solution_str, ground_truth, method=opts.method, format_score=opts.format_score,
                                score=opts.score)
    return {"score": float(value), "acc": float(value == opts.score)}
