"""Turn a reward-model checkpoint of the preference trainer (``preference.loss=bt``) into a Hugging Face
``*ForSequenceClassification`` directory (one output, no activation) that vLLM serves for ``/classify``
and that verl's own discriminative reward-model path can load.

The trainer runs verl's scalar-head engine, which wraps the model as ``*ForTokenClassification``
(a per-token head with a bias); the reward of a sequence is the head's output at its last token.
``*ForSequenceClassification`` computes exactly that (the head applied at the last non-padding
token) but its head has no bias. The Bradley–Terry loss only sees reward *differences*, so the bias
receives an exactly-zero gradient and keeps its initial value; dropping it shifts every reward by the
same constant, which changes no comparison, no leave-one-out advantage and no win rate. The dropped
value is recorded in ``verlkit_reward_model.json`` next to the weights.

Merging the (possibly sharded) FSDP checkpoint is verl's own ``FSDPModelMerger``; only the
final model class differs.

CLI::

    python -m verlkit.preference.export --checkpoint CKPT/global_step_N --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METADATA_FILE = "verlkit_reward_model.json"


def latest_checkpoint(ckpt_root: str | Path) -> Path:
    """``<root>/global_step_<N>`` of the newest checkpoint verl recorded under ``root``."""
    root = Path(ckpt_root)
    marker = root / "latest_checkpointed_iteration.txt"
    if marker.is_file():
        step = marker.read_text().strip()
        path = root / f"global_step_{step}"
        if path.is_dir():
            return path
    steps = sorted(root.glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[-1]))
    if not steps:
        raise FileNotFoundError(f"no global_step_* checkpoint under {root}")
    return steps[-1]


def _merger_class():
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    class SequenceClassifierMerger(FSDPModelMerger):
        """verl's FSDP merger, saving the merged weights as a one-label sequence classifier."""

        dropped_bias: float | None = None

        def save_hf_model_and_tokenizer(self, state_dict):
            config = self.model_config
            tokenizer = AutoTokenizer.from_pretrained(self.hf_model_config_path)
            config.num_labels = 1
            config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
            if config.pad_token_id is None:
                # the classifier finds each sequence's last token through the padding id
                config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            for key in ("classifier_dropout", "hidden_dropout", "summary_dropout_prob", "attn_implementation"):
                if hasattr(config, key):
                    delattr(config, key)
            model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
            config.architectures = [type(model).__name__]
            bias = state_dict.pop("score.bias", None)
            if bias is not None:
                self.dropped_bias = float(bias.float().reshape(-1)[0])
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
            # tied input/output embeddings are not part of a classifier; anything else is a mismatch
            unexpected = [k for k in unexpected if not k.startswith("lm_head.")]
            if missing or unexpected:
                raise RuntimeError(
                    f"checkpoint {self.config.local_dir} does not fit {type(model).__name__}: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
            model.save_pretrained(self.config.target_dir)
            tokenizer.save_pretrained(self.config.target_dir)

    return SequenceClassifierMerger


def export_reward_model(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Merge ``checkpoint`` (a ``global_step_N`` directory, or a checkpoint root) into ``out_dir``."""
    from verl.model_merger.base_model_merger import ModelMergerConfig

    checkpoint = Path(checkpoint)
    if not (checkpoint / "fsdp_config.json").is_file():
        checkpoint = latest_checkpoint(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = ModelMergerConfig(
        operation="merge", backend="fsdp", local_dir=str(checkpoint), target_dir=str(out),
        hf_model_config_path=str(checkpoint / "huggingface"),
    )  # fmt: skip
    merger = _merger_class()(config)
    merger.merge_and_save()
    metadata = {
        "objective": "bradley_terry",
        "reward": "head output at the last token (no activation)",
        "source_checkpoint": str(checkpoint.resolve()),
        "dropped_head_bias": merger.dropped_bias,
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.preference.export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="global_step_N directory or checkpoint root")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        out = export_reward_model(args.checkpoint, args.out)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"reward_model_export: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
