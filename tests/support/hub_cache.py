"""A Hugging Face Hub cache laid out by hand, for resolving Hub ids without network.

The layout is huggingface_hub's (``models--<org>--<name>/refs/main`` holding the commit,
``snapshots/<commit>/<files>``), what ``hf download`` leaves behind.
"""

from __future__ import annotations

import json
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(hub: Path, repo_id: str) -> Path:
    """A cached snapshot of ``repo_id`` under ``hub`` (the cache directory); returns its folder."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return snapshot
