"""Reading an offline wandb run back in a test: the records of its ``run-<id>.wandb`` file.

wandb 0.31 writes the file from its Go core and ships no Python reader any more, so the framing is
read here: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log records in
32 KiB blocks (4-byte CRC-32 seeded with the record type, 2-byte length, 1-byte type: full, first,
middle, last). Each payload is one of wandb's own protobuf ``Record`` messages
(``wandb.proto.wandb_internal_pb2``), which decode it; a checksum mismatch fails the read.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
FRAME = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    if not data.startswith(HEADER):
        raise ValueError(f"not a wandb run file (header {data[:7]!r})")
    pos, pending = len(HEADER), b""
    while pos + FRAME.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < FRAME.size:  # the block's tail is padding
            pos += left
            continue
        checksum, length, kind = FRAME.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding up to the block's end
            pos += left
            continue
        chunk = data[pos + FRAME.size : pos + FRAME.size + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"checksum mismatch in the record at byte {pos}")
        pos += FRAME.size + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            raise ValueError(f"unknown record type {kind} at byte {pos}")


@dataclass
class OfflineRun:
    """What a test wants from one offline run: its identity, logged history, summary and files."""

    directory: Path
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def files(self, pattern: str = "**/*") -> list[Path]:
        return sorted(p for p in (self.directory / "files").glob(pattern) if p.is_file())


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_offline_run(directory: str | Path) -> OfflineRun:
    """Decode ``<directory>/run-*.wandb`` (an ``offline-run-*`` folder)."""
    from wandb.proto import wandb_internal_pb2

    directory = Path(directory)
    (path,) = directory.glob("run-*.wandb")
    run = OfflineRun(directory)
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.project, run.group, run.job_type = record.run.project, record.run.run_group, record.run.job_type
            run.name = record.run.display_name
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
    return run


def offline_runs(wandb_dir: str | Path) -> list[OfflineRun]:
    """Every offline run under a ``wandb/`` folder."""
    return [read_offline_run(d) for d in sorted(Path(wandb_dir).glob("offline-run-*")) if list(d.glob("run-*.wandb"))]
