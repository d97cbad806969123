"""``Run.serve_together``: independent servers of a recipe load side by side, and a failure of one
stops the others (the CPU build of vLLM; the failing one is a model directory vLLM cannot load)."""

from __future__ import annotations

import contextlib
import json

import pytest
from support.server_processes import forget_external_urls, group_members, state

from recipes.driver import RecipeError, Run
from verlkit.serving import ServerSpec

pytestmark = [pytest.mark.integration, pytest.mark.own_vllm_server]


@pytest.fixture(autouse=True)
def _no_external_url_from_env(monkeypatch):
    forget_external_urls(monkeypatch)


def test_a_server_that_dies_while_another_loads_stops_both(tiny_model_dir, tmp_path):
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    run_dir = tmp_path / "run"
    with pytest.raises(RecipeError) as err, contextlib.ExitStack() as stack:
        run = Run.open("test", "cpu", str(run_dir), stack)
        run.serve_together(ServerSpec(model=bogus, name="bogus", run_dir=run_dir, ready_timeout_s=600),
                           ServerSpec(model=tiny_model_dir, name="tiny", run_dir=run_dir, ready_timeout_s=600))
    assert "the bogus server did not become ready" in str(err.value) and "no-such-architecture" in str(err.value)
    # the second server had started before the first failed (one after the other, it never would have),
    # and leaving the run stopped it
    tiny = state(run_dir / "tiny.server.json")
    assert tiny["pgid"] and tiny["state"] in ("stopped", "failed")
    assert not group_members(tiny["pgid"]) and not group_members(state(run_dir / "bogus.server.json")["pgid"])
