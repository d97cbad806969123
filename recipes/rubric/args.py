"""CLI: print run_rubric.sh's hydra overrides, one per line (see recipes.rubric)."""

import argparse

from recipes.rubric import RubricRun, overrides


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True/False, got {text!r}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=["gpu", "cpu"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--verifier-url", required=True)
    p.add_argument("--verifier-name", default="verifier")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--no-entropy-loss-and-kl", type=_bool, default=True)
    p.add_argument("--setup", choices=["tinyv_only", "addon", "mixed"], default="tinyv_only")
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--template", choices=["rubric", "tinyv"], default="rubric")
    p.add_argument("--algorithm", choices=["gae", "grpo"], default="gae")
    p.add_argument("--n-gpus-per-node", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--run-dir", default="runs/rubric")
    p.add_argument("--experiment", default="rubric")
    p.add_argument("--logger", default="console,wandb")
    p.add_argument("--on-failure", choices=["rule", "zero"], default="rule")
    a = p.parse_args(argv)
    run = RubricRun(
        model=a.model, train_files=a.train, val_files=a.val, verifier_url=a.verifier_url,
        verifier_name=a.verifier_name, epochs=a.epochs, no_entropy_loss_and_kl=a.no_entropy_loss_and_kl,
        setup=a.setup, weight=a.weight, template=a.template, algorithm=a.algorithm, profile=a.profile,
        n_gpus_per_node=a.n_gpus_per_node, nnodes=a.nnodes, run_dir=a.run_dir, experiment=a.experiment,
        logger=tuple(x for x in a.logger.split(",") if x), on_failure=a.on_failure,
    )
    print("\n".join(overrides(run)))


if __name__ == "__main__":
    main()
