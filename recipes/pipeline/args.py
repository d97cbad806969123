"""CLI for recipes/pipeline/run_all.sh (see recipes.pipeline).

    python -m recipes.pipeline.args overrides STAGE --profile gpu|cpu --model M --data DIR --run-dir DIR ...
        print the stage trainer's hydra overrides, one per line
    python -m recipes.pipeline.args stages "prep,sft,..."
        print the selected stages in pipeline order, one per line (exit 2 on an unknown stage)
    python -m recipes.pipeline.args latest CHECKPOINT_DIR [--actor]
        print <dir>/global_step_N (or its actor/) of the last saved step
    python -m recipes.pipeline.args report RUN_DIR
        print the run's outcome table and write RUN_DIR/summary.json
"""

from __future__ import annotations

import argparse
import sys

from recipes.pipeline import OVERRIDES, PipelineRun, overrides, parse_stages, report


def _overrides(a: argparse.Namespace) -> int:
    run = PipelineRun(
        profile=a.profile, model=a.model, data=a.data, run_dir=a.run_dir, nproc=a.nproc, nnodes=a.nnodes,
        logger=tuple(x for x in a.logger.split(",") if x), experiment=a.experiment, epochs=a.epochs, steps=a.steps,
        rm_url=a.rm_url, rm_name=a.rm_name, rm_tokenizer=a.rm_tokenizer,
    )  # fmt: skip
    print("\n".join(overrides(a.stage, run)))
    return 0


def _latest(a: argparse.Namespace) -> int:
    from recipes import latest_actor_checkpoint, latest_checkpoint

    print(latest_actor_checkpoint(a.checkpoint_dir) if a.actor else latest_checkpoint(a.checkpoint_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.pipeline.args", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overrides")
    p.add_argument("stage", choices=sorted(OVERRIDES))
    p.add_argument("--profile", choices=["gpu", "cpu"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--nproc", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--logger", default="console,wandb")
    p.add_argument("--experiment", default="pipeline")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--rm-url", default="")
    p.add_argument("--rm-name", default="reward_model")
    p.add_argument("--rm-tokenizer", default="")
    p = sub.add_parser("stages")
    p.add_argument("text")
    p = sub.add_parser("latest")
    p.add_argument("checkpoint_dir")
    p.add_argument("--actor", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("run_dir")
    a = parser.parse_args(argv)
    try:
        if a.command == "overrides":
            return _overrides(a)
        if a.command == "stages":
            print("\n".join(parse_stages(a.text)))
            return 0
        if a.command == "report":
            import json
            from pathlib import Path

            table, summary = report(a.run_dir)
            print(table)
            (Path(a.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            return 0
        return _latest(a)
    except (ValueError, FileNotFoundError) as e:
        print(f"recipes.pipeline: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
