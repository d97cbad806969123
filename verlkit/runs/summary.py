"""Read verl's console step lines back into numbers, and print what a recipe user wants to see.

verl's console logger prints one ``step:N - key:value - key:value ...`` line per training step.
``parse_step_metrics`` turns a log into ``{step: {key: value}}``; ``python -m
verlkit.runs.summary LOG [--json OUT]`` prints the reward and verifier metrics of every step
(the recipes call it at the end of a run) and optionally writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_STEP = re.compile(r"step:(\d+) - (.*)$")
_NUMBER = re.compile(r"^(?:np\.\w+\()?(-?[0-9.eE+-]+|nan|inf|-inf)\)?$")
SUMMARY_PREFIXES = ("critic/score/mean", "critic/rewards/mean", "reward/", "calibration/", "gdpo/",
                    "response_length/mean", "timing_s/step")


def parse_step_metrics(text: str) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for line in text.splitlines():
        match = _STEP.search(line)
        if not match:
            continue
        metrics = {}
        for item in match.group(2).split(" - "):
            key, sep, raw = item.partition(":")
            number = _NUMBER.match(raw.strip()) if sep else None
            if number:
                metrics[key.strip()] = float(number.group(1))
        # several lines may carry one step (verl's SFT trainer logs val/loss on a line of its own, and
        # may repeat a line): merge them, a later value of the same key winning
        steps.setdefault(int(match.group(1)), {}).update(metrics)
    return steps


def summary_table(steps: dict[int, dict[str, float]], prefixes=SUMMARY_PREFIXES) -> str:
    keys = sorted({k for m in steps.values() for k in m if k.startswith(prefixes)})
    if not steps or not keys:
        return "no training steps found in the log"
    width = max(len(k) for k in keys)
    header = " " * width + "".join(f"  step {s:>4}" for s in sorted(steps))
    rows = [header]
    for key in keys:
        cells = "".join(f"  {steps[s].get(key, float('nan')):>9.4g}" for s in sorted(steps))
        rows.append(f"{key:<{width}}{cells}")
    return "\n".join(rows)


def pass_at_1(steps: dict[int, dict[str, float]], sources) -> dict[str, dict[str, float]]:
    """``{source: {"pass@1": value, "step": step}}`` from the last validation of each of ``sources``: verl's
    ``val-core/<source>/acc/mean@<n>`` (the mean accuracy over the validation samples, greedy by default,
    an estimate of pass@1 for n > 1). A source never validated is left out."""
    out: dict[str, dict[str, float]] = {}
    for source in sources:
        key = re.compile(rf"^val-core/{re.escape(source)}/acc/mean@\d+$")
        for step in sorted(steps):
            values = [v for k, v in steps[step].items() if key.match(k)]
            if values:
                out[source] = {"pass@1": values[0], "step": step}
    return out


def pass_at_1_lines(results: dict[str, dict[str, float]]) -> str:
    return "\n".join(f"pass@1 on {source}: {r['pass@1']:.4g} (validation at step {int(r['step'])})"
                     for source, r in sorted(results.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log", type=Path)
    parser.add_argument("--json", type=Path, help="also write {step: {metric: value}} here")
    parser.add_argument("--prefixes", default=",".join(SUMMARY_PREFIXES), help="comma-separated metric prefixes to print")
    args = parser.parse_args(argv)
    steps = parse_step_metrics(args.log.read_text(errors="replace"))
    print(summary_table(steps, tuple(p for p in args.prefixes.split(",") if p)))
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in sorted(steps.items())}, indent=1))
    return 0 if steps else 1


if __name__ == "__main__":
    sys.exit(main())
