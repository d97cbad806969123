"""CLI for run_confidence.sh (see recipes.confidence).

    python -m recipes.confidence.args overrides --profile gpu|cpu --design cgp|rlcr --model M ...
        print the trainer's hydra overrides, one per line
    python -m recipes.confidence.args check-devices TRAIN_DEVICES DOWNSTREAM_DEVICES
        exit 2 with a message if the two CUDA device lists overlap
    python -m recipes.confidence.args latest-actor CHECKPOINT_DIR
        print <dir>/global_step_N/actor of the last saved step
    python -m recipes.confidence.args check-chat URL MODEL [--api-key-env NAME]
        one chat request to a hosted downstream API; exit 1 with a message if it fails
    python -m recipes.confidence.args report METRICS_JSON
        print the evaluation's metrics table; exit 1 if a condition got no answer at all
"""

from __future__ import annotations

import argparse
import sys

from recipes.confidence import (
    ConfidenceRun,
    check_chat,
    check_devices,
    eval_report,
    latest_actor_checkpoint,
    overrides,
)


def _overrides(a: argparse.Namespace) -> int:
    run = ConfidenceRun(
        model=a.model, train_files=a.train, val_files=a.val, design=a.design, downstream_url=a.downstream_url,
        downstream_name=a.downstream_name, downstream_api_key_env=a.downstream_api_key_env or None,
        downstream_rate_limit_rps=a.downstream_rate_limit_rps, downstream_max_tokens=a.downstream_max_tokens,
        variant=a.variant, epochs=a.epochs, profile=a.profile, n_gpus_per_node=a.n_gpus_per_node,
        nnodes=a.nnodes, steps=a.steps, run_dir=a.run_dir, experiment=a.experiment,
        logger=tuple(x for x in a.logger.split(",") if x),
    )
    print("\n".join(overrides(run)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.confidence.args", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overrides")
    p.add_argument("--profile", choices=["gpu", "cpu"], required=True)
    p.add_argument("--design", choices=["cgp", "rlcr"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--downstream-url", default="")
    p.add_argument("--downstream-name", default="downstream")
    p.add_argument("--downstream-api-key-env", default="")
    p.add_argument("--downstream-rate-limit-rps", type=float, default=None)
    p.add_argument("--downstream-max-tokens", type=int, default=256)
    p.add_argument("--variant", choices=["log", "log_penalized", "brier"], default="log_penalized")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-gpus-per-node", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--run-dir", default="runs/confidence")
    p.add_argument("--experiment", default="confidence")
    p.add_argument("--logger", default="console,wandb")
    p = sub.add_parser("check-devices")
    p.add_argument("train_devices")
    p.add_argument("downstream_devices")
    p = sub.add_parser("latest-actor")
    p.add_argument("checkpoint_dir")
    p = sub.add_parser("check-chat")
    p.add_argument("url")
    p.add_argument("model")
    p.add_argument("--api-key-env", default="")
    p = sub.add_parser("report")
    p.add_argument("metrics_json")
    a = parser.parse_args(argv)
    if a.command == "overrides":
        try:
            return _overrides(a)
        except ValueError as e:
            parser.error(str(e))
    if a.command == "check-devices":
        problem = check_devices(a.train_devices, a.downstream_devices)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        return 0
    if a.command == "latest-actor":
        try:
            print(latest_actor_checkpoint(a.checkpoint_dir))
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if a.command == "check-chat":
        problem = check_chat(a.url, a.model, a.api_key_env or None)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    if a.command == "report":
        import json
        from pathlib import Path

        table, problems = eval_report(json.loads(Path(a.metrics_json).read_text()))
        print(table)
        for problem in problems:
            print(f"error: {a.metrics_json}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
