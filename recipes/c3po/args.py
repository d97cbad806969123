"""CLI for run_c3po.sh (see recipes.c3po).

    python -m recipes.c3po.args select [--feedback FILE ...] [--prefix P]
        print the slugs of the selected feedbacks, one per line (exit 2 with the error otherwise)
    python -m recipes.c3po.args overrides --profile gpu|cpu --method M --model DIR --train F --ckpt DIR ...
        print the preference trainer's hydra overrides, one per line
    python -m recipes.c3po.args rows PARQUET
        print the number of rows of a training parquet
    python -m recipes.c3po.args load-adapter URL NAME PATH
        load a LoRA adapter into a running vLLM server (started with --enable-lora)
    python -m recipes.c3po.args report EVAL_DIR
        print the evaluation table of every feedback and method
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.c3po.args", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("select")
    p.add_argument("--feedback", action="append", type=Path)
    p.add_argument("--prefix", default=None)
    p = sub.add_parser("overrides")
    p.add_argument("--profile", choices=["gpu", "cpu"], required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--nproc", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--batch-rows", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--lora-alpha", type=int, default=128)
    p.add_argument("--logger", default="console,wandb")
    p.add_argument("--experiment", default="c3po")
    p = sub.add_parser("rows")
    p.add_argument("parquet")
    p = sub.add_parser("load-adapter")
    p.add_argument("url")
    p.add_argument("name")
    p.add_argument("path")
    p = sub.add_parser("report")
    p.add_argument("eval_dir")
    a = parser.parse_args(argv)

    if a.command == "select":
        # the shipped names: these stdlib-only modules do not need upstream verl imported first
        from verlkit.c3po.feedback import load_feedbacks, select_feedbacks
        from verlkit.c3po.general_prompts import BUNDLED_FEEDBACKS
        from verlkit.records import InputError

        try:
            chosen = select_feedbacks(load_feedbacks(a.feedback or [BUNDLED_FEEDBACKS]), a.prefix)
        except InputError as e:
            print(f"run_c3po: {e}", file=sys.stderr)
            return 2
        print("\n".join(f.slug for f in chosen))
        return 0
    if a.command == "overrides":
        from recipes.c3po import C3POTrain, train_overrides

        run = C3POTrain(profile=a.profile, model=a.model, train_file=a.train, checkpoint_dir=a.ckpt, method=a.method,
                        nproc=a.nproc, nnodes=a.nnodes, batch_rows=a.batch_rows, lr=a.lr, epochs=a.epochs,
                        lora_rank=a.lora_rank, lora_alpha=a.lora_alpha,
                        logger=tuple(x for x in a.logger.split(",") if x), experiment=a.experiment)  # fmt: skip
        print("\n".join(train_overrides(run)))
        return 0
    if a.command == "rows":
        import pyarrow.parquet as pq

        print(pq.ParquetFile(a.parquet).metadata.num_rows)
        return 0
    if a.command == "load-adapter":
        from verlkit.serving import ServerStartError, load_lora_adapter

        try:
            load_lora_adapter(a.url, a.name, a.path)
        except ServerStartError as e:
            print(f"run_c3po: {e}", file=sys.stderr)
            return 1
        return 0
    from recipes.c3po import report

    print(report(a.eval_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
