"""Model arguments as users write them: a local directory, or a Hugging Face Hub id (``Qwen/Qwen2.5-7B``).

:func:`resolve_model` turns either into a local path before anything is started, so that a model
that cannot be had fails with one clear message naming it instead of a server or trainer dying
minutes later. A Hub id is looked up the way vLLM and verl's trainers find it (through
``huggingface_hub`` and the Hugging Face cache), so what is resolved here is what they load:

- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: only the cache is read, nothing is fetched.
- ``HF_HUB_CACHE`` (or ``HUGGINGFACE_HUB_CACHE``), else ``$HF_HOME/hub``, else
  ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``): where the cache is. Read at
  each call, not once at import as ``huggingface_hub`` does, so a test or a recipe may set them late.
- Online, a model missing from the cache is downloaded (``HF_TOKEN`` for gated or private models),
  leaving out other frameworks' weight formats (:data:`IGNORE_PATTERNS`).

What counts as what: an existing file or directory is local; anything that is not a valid Hub id
(``org/name`` or ``name``: letters, digits, ``-_.``) or that starts like a path (``/``, ``./``, ``~``) is
a local path that does not exist; the rest is a Hub id.

CLI: ``python -m verlkit.models.resolve MODEL [MODEL...]`` prints one local path per line, or the
reason for the first model that cannot be resolved and exits 1. ``--check-only`` resolves without
downloading (cache or local only), for composing a command line on a machine without network.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

# Weights of other frameworks and duplicate checkpoints that vLLM and transformers never read.
IGNORE_PATTERNS = ("original/*", "*.pth", "*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.tflite",
                   "*.ot", "*.mlmodel", "coreml/*")
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w\-.]{0,95}/)?[A-Za-z0-9][\w\-.]{0,95}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelResolutionError(RuntimeError):
    """The model argument names neither an existing local path nor a Hub model that can be had."""


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (now, not at import)."""
    return any(os.environ.get(name, "").strip().upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache directory as ``huggingface_hub`` computes it, from today's environment."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def is_hub_id(model: str | Path) -> bool:
    """True when ``model`` is not an existing path and reads as a Hub repository id."""
    if Path(str(model)).expanduser().exists():
        return False
    text = str(model)
    return not text.startswith(("/", "./", "../", "~")) and ".." not in text and "--" not in text and bool(
        _HUB_ID.match(text))


def resolve_model(model: str | Path, *, revision: str | None = None, download: bool = True,
                  role: str | None = None) -> Path:
    """The local path of ``model`` (a local path, or a Hub id resolved through the HF cache).

    ``download=False`` reads the cache only, as if offline. ``role`` ("verifier", "policy", ...) is
    named in the error. Raises :class:`ModelResolutionError` naming the model and why.
    """
    what = f"model {str(model)!r}" + (f" ({role})" if role else "")
    local = Path(str(model)).expanduser()
    if local.exists():
        return local.resolve()
    if not is_hub_id(model):
        raise ModelResolutionError(f"{what} not found: no such file or directory, and not a Hugging Face Hub id "
                                   "(org/name)")
    offline = hub_offline() or not download
    cache = hub_cache_dir()
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(str(model), revision=revision, cache_dir=str(cache), local_files_only=offline,
                                 ignore_patterns=list(IGNORE_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - every way of not getting the model becomes one message
        raise ModelResolutionError(f"{what} could not be resolved: {_reason(exc, offline, cache)}") from exc
    return Path(path)


def _reason(exc: Exception, offline: bool, cache: Path) -> str:
    name = type(exc).__name__
    if offline:
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "downloads are off (--check-only)"
        return (f"{why} and it is not in the Hugging Face cache at {cache}. Download it where the Hub is "
                "reachable (hf download <id>) into that cache, or pass a local directory")
    if name in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
        return f"the Hub does not serve it ({name}: a typo, or a gated/private model needing HF_TOKEN)"
    return (f"it is not in the Hugging Face cache at {cache} and fetching it failed ({name}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no details'}); offline, pass a local directory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.models.resolve", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="local directories or Hugging Face Hub ids")
    parser.add_argument("--check-only", action="store_true", help="read the cache only, never download")
    parser.add_argument("--role", default=None, help="what the model is for (named in the error)")
    args = parser.parse_args(argv)
    for model in args.models:
        try:
            print(resolve_model(model, download=not args.check_only, role=args.role))
        except ModelResolutionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
