"""Two trained LoRA adapters as ONE adapter whose update is exactly the sum of theirs.

An adapter adds ``ΔW = s·B·A`` to a weight (``A``: r×in, ``B``: out×r, ``s = lora_alpha / r``). The sum of
two updates ``s1·B1·A1 + s2·B2·A2`` equals ``[s1·B1  s2·B2] · [A1; A2]``: a LoRA of rank ``r1 + r2``
(the concatenation PEFT calls ``cat``). Averaging or summing the A and B matrices instead would add
the cross terms ``B1·A2`` and ``B2·A1``: not the sum of the updates. The merged adapter folds each
scale into its B block and declares ``lora_alpha = r`` (scale 1), so any server that loads PEFT
adapters applies it exactly; it needs ``max_lora_rank >= r1 + r2`` there.

CLI: ``python -m verlkit.c3po.adapters ADAPTER_1 ADAPTER_2 --out MERGED [--weights 1 1]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def _scale(config: dict, key: str) -> tuple[int, float]:
    """(rank, alpha/rank) of the module ``key`` (per-module rank and alpha patterns are not supported)."""
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError("adapters with per-module rank or alpha patterns are not supported")
    r = int(config["r"])
    return r, float(config.get("lora_alpha", r)) / r


def concatenate_adapters(paths: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Write the adapter whose update is ``sum_i weights[i] * update_i`` of the PEFT adapters in ``paths``
    (same base model and target modules) to ``out``; returns ``out``."""
    import torch
    from safetensors.torch import load_file, save_file

    paths = [Path(p) for p in paths]
    weights = list(weights) if weights is not None else [1.0] * len(paths)
    if len(paths) < 2 or len(weights) != len(paths):
        raise ValueError("need two or more adapters and one weight per adapter")
    configs = [json.loads((p / CONFIG).read_text()) for p in paths]
    tensors = [load_file(str(p / WEIGHTS)) for p in paths]
    for p, c, t in zip(paths[1:], configs[1:], tensors[1:]):
        if c.get("base_model_name_or_path") != configs[0].get("base_model_name_or_path"):
            raise ValueError(f"{p}: another base model than {paths[0]}")
        if set(t) != set(tensors[0]):
            raise ValueError(f"{p}: other adapted modules than {paths[0]}")
    merged = {}
    for key in tensors[0]:
        if ".lora_A." in key:
            merged[key] = torch.cat([t[key] for t in tensors], dim=0)
        elif ".lora_B." in key:
            blocks = [w * _scale(c, key)[1] * t[key].float() for w, c, t in zip(weights, configs, tensors)]
            merged[key] = torch.cat(blocks, dim=1).to(tensors[0][key].dtype)
        else:
            raise ValueError(f"{paths[0]}: {key} is neither a lora_A nor a lora_B weight")
    rank = sum(_scale(c, "")[0] for c in configs)
    config = {**configs[0], "r": rank, "lora_alpha": rank, "rank_pattern": {}, "alpha_pattern": {}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in merged.items()}, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verlkit.c3po.adapters", description=__doc__.splitlines()[0])
    p.add_argument("adapters", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--weights", nargs="+", type=float, default=None)
    args = p.parse_args(argv)
    try:
        out = concatenate_adapters(args.adapters, args.out, args.weights)
    except (OSError, ValueError, KeyError) as e:
        print(f"c3po adapters: {e}", file=sys.stderr)
        return 2
    print(f"{out}: rank {json.loads((out / CONFIG).read_text())['r']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
