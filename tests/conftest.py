"""Session fixtures shared by all tests: the tiny local model and ONE real CPU vLLM server.

The server is lazy (only tests that request ``vllm_server`` start it) and lives for the whole
session. Tests marked ``own_vllm_server`` start vLLM processes of their own; they are moved to the
front of the run so that they never overlap with the session server (one vLLM at a time on these
small machines).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Defaults before anything imports transformers/vLLM: local cache, never reach a model hub.
os.environ.setdefault("VERLKIT_CACHE", str(Path.home() / ".cache" / "verlkit"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

SESSION_SERVER_NAME = "tiny-verifier"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "own_vllm_server: starts vLLM processes of its own (runs before the session server starts)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable partition: own-server tests first, everything else keeps its order.
    items[:] = [i for i in items if i.get_closest_marker("own_vllm_server")] + [
        i for i in items if not i.get_closest_marker("own_vllm_server")
    ]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny deterministic Qwen2 (built once into ``$VERLKIT_CACHE``, reused afterwards)."""
    from verlkit.models.local import build_tiny_qwen2

    return build_tiny_qwen2()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real CPU vLLM server serving the tiny model as ``tiny-verifier`` for the whole session.

    Yields the launcher's ``ServedModel`` (``.base_url`` like http://127.0.0.1:PORT/v1,
    ``.model_name``); its process group is stopped at the end of the session.
    """
    from verlkit.serving import ServerSpec, launch

    spec = ServerSpec(
        model=tiny_model_dir,
        served_model_name=SESSION_SERVER_NAME,
        name=SESSION_SERVER_NAME,
        run_dir=tmp_path_factory.mktemp("vllm_session_server"),
        ready_timeout_s=float(os.environ.get("VERLKIT_TEST_SERVER_TIMEOUT", "420")),
    )
    server = launch(spec)
    try:
        yield server
    finally:
        server.stop()
