"""CLI: print train_rrm.sh's hydra overrides, one per line (see recipes.rubric.rrm_overrides)."""

import argparse

from recipes.rubric import rrm_overrides


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", choices=["gpu", "cpu"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--algorithm", choices=["gae", "grpo"], default="gae")
    p.add_argument("--n-gpus-per-node", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--run-dir", default="runs/rrm")
    p.add_argument("--logger", default="console,wandb")
    a = p.parse_args(argv)
    print("\n".join(rrm_overrides(a.model, a.train, a.val, a.profile, a.epochs, a.run_dir, a.algorithm,
                                  a.n_gpus_per_node, a.nnodes, tuple(x for x in a.logger.split(",") if x))))


if __name__ == "__main__":
    main()
