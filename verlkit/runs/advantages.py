"""The advantages a run trained on next to the GRPO advantages of the same batch.

``python -m verlkit.runs.advantages DUMP.jsonl [--step N]`` reads an advantage dump
(``VERLKIT_ADVANTAGE_DUMP``, one JSON line per sample and step: uid, score, advantage, components)
and prints, per step and group, each sample's components, its summed score, the advantage the trainer
used (e.g. ``gdpo``'s) and the GRPO advantage its score would have had: (score - group mean) /
(unbiased group std + 1e-6), as verl's ``grpo`` computes it. Samples whose scores tie but whose
components differ share one GRPO advantage; under ``gdpo`` they need not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

EPSILON = 1e-6


def grpo_advantages(scores: list[float], groups: list[str], norm_by_std: bool = True) -> list[float]:
    """GRPO's outcome advantage of each sample within its group; a group of one is scored against mean
    0 and std 1 (verl's fallback for singleton groups)."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    out = [0.0] * len(scores)
    for rows in members.values():
        values = [scores[i] for i in rows]
        if len(values) == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        for i in rows:
            out[i] = (scores[i] - mean) / (std + EPSILON) if norm_by_std else scores[i] - mean
    return out


def read_dump(path: Path) -> dict[int, list[dict]]:
    """``{step: [record, ...]}`` of the real samples (padding rows have no response tokens)."""
    steps: dict[int, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("response_tokens", 1) > 0:
                steps[int(record["step"])].append(record)
    return dict(steps)


def comparison_table(records: list[dict]) -> str:
    """One line per sample, grouped: components, score, the trained advantage, the GRPO advantage."""
    grpo = grpo_advantages([r["score"] for r in records], [r["uid"] for r in records])
    keys = sorted({k for r in records for k in r.get("components", {})})
    header = ["group", *keys, "score", "advantage", "grpo"]
    order = sorted(range(len(records)), key=lambda i: (records[i]["uid"], -records[i]["score"]))
    names: dict[str, str] = {}
    rows = []
    for i in order:
        r = records[i]
        group = names.setdefault(r["uid"], f"g{len(names) + 1}")
        rows.append([group, *(f"{r.get('components', {}).get(k, math.nan):.4g}" for k in keys),
                     f"{r['score']:.4g}", f"{r['advantage']:+.4f}", f"{grpo[i]:+.4f}"])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(line, widths)) for line in [header, *rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dump", type=Path)
    parser.add_argument("--step", type=int, help="only this step (default: every step)")
    args = parser.parse_args(argv)
    steps = read_dump(args.dump)
    if not steps:
        print(f"no samples in {args.dump}", file=sys.stderr)
        return 1
    for step in sorted(steps):
        if args.step is None or step == args.step:
            print(f"step {step}\n{comparison_table(steps[step])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
