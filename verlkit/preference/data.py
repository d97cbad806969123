"""Preference data for the preference trainer (DPO, C3PO's LCDPO and their SFT baselines).

Records of one file or a list of files (parquet, or any format :func:`verlkit.records.read_records`
reads):

* ``kind`` (optional, default ``pair``): ``pair``, ``near_scope`` or ``out_of_scope``.
* ``prompt``: a list of chat messages (``{"role", "content"}``) or a plain string (one user turn).
* pair rows: ``chosen`` and ``rejected``, each an assistant reply string or a list of messages.
* constraint rows (``near_scope``/``out_of_scope``): ``response``, the original model's baseline
  completion (string or list of messages).

One dataset item is one row and yields one sequence per side: ``[chosen, rejected]`` for a pair,
``[response]`` for a constraint row. Each sequence is the chat template applied to prompt + reply;
the loss mask covers exactly the tokens after the prompt's generation header (the reply, its
end-of-turn token included). The collator keeps a pair's two sequences adjacent (chosen first) and
pads every rank's batch to the same number of sequences with zero-weight dummy rows, because the
engine's gloo all-gathers need equal counts on every rank.

A bad record raises :class:`verlkit.records.InputError` naming the file, the record and the field,
while the dataset is built: before the first training step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from verlkit.records import InputError, chat_messages, read_records

KIND_CHOSEN = 0
KIND_REJECTED = 1
KIND_OUT_OF_SCOPE = 2
KIND_NEAR_SCOPE = 3
KIND_PADDING = -1

ROW_KINDS = ("pair", "near_scope", "out_of_scope")
# The most sequences one row yields (a pair); the collator pads every rank to this many per row.
MAX_SEQS_PER_ROW = 2


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


class PreferenceDataset(Dataset):
    """Tokenized preference rows; see the module docstring for the format.

    The constructor signature is the one verl's ``create_sft_dataset`` uses for ``data.custom_cls``.
    ``kinds`` restricts which row kinds are kept (the plain ``dpo``/``sft`` objectives drop
    constraint rows instead of paying for their forward passes).
    """

    def __init__(
        self,
        parquet_files: str | Sequence[str],
        tokenizer,
        config: Any = None,
        processor=None,
        max_samples: int = -1,
        kinds: Sequence[str] | None = None,
    ):
        config = config or {}
        get = config.get if hasattr(config, "get") else (lambda k, d=None: d)
        self.tokenizer = tokenizer
        self.max_length = int(get("max_length", 1024))
        self.truncation = get("truncation", "error")
        if self.truncation not in ("error", "right"):
            raise ValueError(f"data.truncation={self.truncation!r}: the preference dataset supports 'error' or 'right'")
        self.chat_kwargs = dict(get("apply_chat_template_kwargs", {}) or {})
        keep = set(kinds or ROW_KINDS)
        unknown = keep - set(ROW_KINDS)
        if unknown:
            raise ValueError(f"unknown row kinds {sorted(unknown)}; expected a subset of {ROW_KINDS}")
        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        self.items: list[dict[str, Any]] = []
        for path in files:
            for index, row in enumerate(read_records(path)):
                kind = row.get("kind")
                kind = "pair" if _is_missing(kind) else str(kind)
                if kind not in ROW_KINDS:
                    raise InputError(f"{kind!r} is not one of {ROW_KINDS}", file=path, entry=index, field="kind")
                if kind not in keep:
                    continue
                self.items.append(self._tokenize_row(path, index, kind, row))
                if 0 < max_samples <= len(self.items):
                    break
        if not self.items:
            raise InputError(f"no usable rows of kinds {sorted(keep)}", file=", ".join(map(str, files)))
        # Filled by the trainer before the first update: summed reference log-prob per sequence,
        # and (only for a KL term) the reference's top-k next-token log-probs of constraint rows:
        # ``{index: (ids (len, k) long, logprobs (len, k) float)}``.
        self.ref_logps: dict[int, list[float]] | None = None
        self.ref_topk: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    # -- tokenization -------------------------------------------------------------------------

    def _template_ids(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        out = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, **self.chat_kwargs
        )
        if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
            out = out["input_ids"]
        return list(out)

    def _sequence(self, where: dict, field: str, prompt_ids: list[int], prompt: list[dict], reply: Any) -> dict:
        reply_msgs = chat_messages(reply, "assistant", field=field, **where)
        full = self._template_ids(prompt + reply_msgs, add_generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids or len(full) <= len(prompt_ids):
            raise InputError(
                "the chat template of prompt+reply does not start with the prompt's generation prompt, "
                "so the reply tokens cannot be separated", field=field, **where,
            )  # fmt: skip
        if len(full) > self.max_length:
            if self.truncation == "error":
                raise InputError(
                    f"{len(full)} tokens exceed data.max_length={self.max_length} "
                    "(set data.truncation=right to cut the reply)", field=field, **where,
                )  # fmt: skip
            if len(prompt_ids) >= self.max_length:
                raise InputError(
                    f"{len(prompt_ids)} prompt tokens leave no room for the reply within "
                    f"data.max_length={self.max_length}", field="prompt", **where,
                )  # fmt: skip
            full = full[: self.max_length]
        loss_mask = [0] * len(prompt_ids) + [1] * (len(full) - len(prompt_ids))
        return {"input_ids": full, "loss_mask": loss_mask}

    def _tokenize_row(self, path: str, index: int, kind: str, row: dict) -> dict:
        where = {"file": path, "entry": index}
        prompt = chat_messages(row.get("prompt"), "user", field="prompt", **where)
        prompt_ids = self._template_ids(prompt, add_generation_prompt=True)
        if kind == "pair":
            seqs = [
                self._sequence(where, "chosen", prompt_ids, prompt, row.get("chosen")),
                self._sequence(where, "rejected", prompt_ids, prompt, row.get("rejected")),
            ]
            kinds = [KIND_CHOSEN, KIND_REJECTED]
        else:
            seqs = [self._sequence(where, "response", prompt_ids, prompt, row.get("response"))]
            kinds = [KIND_NEAR_SCOPE if kind == "near_scope" else KIND_OUT_OF_SCOPE]
        return {"sequences": seqs, "kinds": kinds}

    # -- Dataset --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        n = len(item["sequences"])
        ref = self.ref_logps.get(index) if self.ref_logps is not None else None
        return {
            "index": index,
            "sequences": item["sequences"],
            "kinds": item["kinds"],
            "ref_logps": list(ref) if ref is not None else [0.0] * n,
            "ref_topk": self.ref_topk.get(index) if self.ref_topk is not None else None,
        }

    def kind_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for item in self.items:
            for k in item["kinds"]:
                counts[k] = counts.get(k, 0) + 1
        return counts


class PreferenceCollator:
    """Flatten items into one sequence per row, pairs adjacent (chosen, rejected), and pad to
    ``rows_per_batch`` sequences with dummy rows (kind ``KIND_PADDING``, empty loss mask).

    With ``topk > 0`` it also emits the reference's top-k next-token ids and log-probs per token as
    ``ref_topk_id_{j}``/``ref_topk_lp_{j}`` (one jagged tensor per j, shaped like ``input_ids``);
    rows without them (pairs, padding) get a uniform placeholder that the loss masks out.
    """

    def __init__(self, rows_per_batch: int, pad_token_id: int, topk: int = 0):
        self.rows_per_batch = rows_per_batch
        self.pad_token_id = int(pad_token_id)
        self.topk = int(topk)

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        ids, masks, kinds, refs, example, slot = [], [], [], [], [], []
        for item in items:
            for j, (seq, kind, ref) in enumerate(zip(item["sequences"], item["kinds"], item["ref_logps"])):
                ids.append(torch.tensor(seq["input_ids"], dtype=torch.long))
                masks.append(torch.tensor(seq["loss_mask"], dtype=torch.long))
                kinds.append(kind)
                refs.append(ref)
                example.append(item["index"])
                slot.append(j)
        if len(ids) > self.rows_per_batch:
            raise ValueError(f"{len(ids)} sequences exceed the {self.rows_per_batch} rows reserved per batch")
        while len(ids) < self.rows_per_batch:
            ids.append(torch.full((2,), self.pad_token_id, dtype=torch.long))
            masks.append(torch.zeros(2, dtype=torch.long))
            kinds.append(KIND_PADDING)
            refs.append(0.0)
            example.append(-1)
            slot.append(-1)
        nested = lambda ts: torch.nested.as_nested_tensor(ts, layout=torch.jagged)
        out = self._topk_fields(items, [len(t) for t in ids], nested) if self.topk > 0 else {}
        return out | {
            "input_ids": nested(ids),
            "position_ids": nested([torch.arange(len(t), dtype=torch.long) for t in ids]),
            "loss_mask": nested(masks),
            "row_kind": torch.tensor(kinds, dtype=torch.long),
            # float64: summed log-probs of long replies are large; keep the reference exact.
            "ref_logp": torch.tensor(refs, dtype=torch.float64),
            "example_index": torch.tensor(example, dtype=torch.long),
            "example_slot": torch.tensor(slot, dtype=torch.long),
        }

    def _topk_fields(self, items: list[dict], lengths: list[int], nested) -> dict[str, Any]:
        k = self.topk
        per_row: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for item in items:
            topk = item.get("ref_topk")
            for j in range(len(item["sequences"])):
                per_row.append(topk if (topk is not None and item["kinds"][j] >= KIND_OUT_OF_SCOPE) else None)
        per_row += [None] * (len(lengths) - len(per_row))
        ids_cols: list[list[torch.Tensor]] = [[] for _ in range(k)]
        lp_cols: list[list[torch.Tensor]] = [[] for _ in range(k)]
        for n, topk in zip(lengths, per_row):
            if topk is None:
                ids = torch.zeros(n, k, dtype=torch.long)
                lps = torch.full((n, k), -math.log(k), dtype=torch.float32)
            else:
                ids, lps = topk
                if ids.shape != (n, k):
                    raise ValueError(f"reference top-k of shape {tuple(ids.shape)} does not fit a {n}-token row (k={k})")
            for j in range(k):
                ids_cols[j].append(ids[:, j].contiguous())
                lp_cols[j].append(lps[:, j].float().contiguous())
        out: dict[str, Any] = {}
        for j in range(k):
            out[f"ref_topk_id_{j}"] = nested(ids_cols[j])
            out[f"ref_topk_lp_{j}"] = nested(lp_cols[j])
        return out
