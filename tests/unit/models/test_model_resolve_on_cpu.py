"""Model arguments: local paths and Hugging Face Hub ids, resolved without network.

The Hub cache here is a directory laid out by hand the way huggingface_hub lays it out
(``models--<org>--<name>/refs/main`` holding the commit, ``snapshots/<commit>/<files>``); the unit tier
has no IP sockets, so any attempt to reach the Hub fails instead of downloading.
"""

from __future__ import annotations

import json

import pytest
from support.hub_cache import fake_hub_cache

from verlkit.models.resolve import ModelResolutionError, hub_cache_dir, is_hub_id, main, resolve_model
from verlkit.serving import ServerSpec, ServerStartError, build_command, launch


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_local_directory_resolves_to_itself(tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    assert resolve_model(model) == model.resolve()
    assert resolve_model(str(model)) == model.resolve()


def test_missing_local_path_says_not_found_and_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(ModelResolutionError, match=r"model '.*/nope' not found"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(ModelResolutionError, match="not found"):
        resolve_model("./models/nope")


def test_hub_id_shapes():
    assert is_hub_id("Qwen/Qwen2.5-7B-Instruct")
    assert is_hub_id("gpt2")
    assert is_hub_id("zhangchenxu/TinyV-1.5B")
    assert not is_hub_id("/abs/path")
    assert not is_hub_id("~/models/x")
    assert not is_hub_id("a/b/c")  # three parts: a path
    assert not is_hub_id("org/../name")
    assert not is_hub_id("org--x/name")


def test_cache_location_follows_hf_home_and_hf_hub_cache_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub_cache_dir() == tmp_path / "elsewhere"


def test_hub_id_in_the_cache_resolves_offline_to_its_snapshot(hf_home):
    snapshot = fake_hub_cache(hf_home / "hub", "Qwen/Qwen2.5-7B-Instruct")
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == snapshot


def test_hub_id_in_the_cache_resolves_when_the_hub_cannot_be_reached(hf_home, monkeypatch):
    # Not offline by configuration: huggingface_hub tries the Hub, cannot get through, uses the cache.
    snapshot = fake_hub_cache(hf_home / "hub", "org/cached")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model("org/cached") == snapshot


def test_hub_id_missing_offline_names_the_model_and_says_why(hf_home):
    with pytest.raises(ModelResolutionError) as err:
        resolve_model("org/verifier-7b", role="verifier")
    message = str(err.value)
    assert "'org/verifier-7b' (verifier) could not be resolved" in message
    assert "HF_HUB_OFFLINE is set" in message and str(hf_home / "hub") in message


def test_hub_id_missing_with_no_network_names_the_model(hf_home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(ModelResolutionError, match="'org/not-cached' could not be resolved"):
        resolve_model("org/not-cached")


def test_check_only_never_downloads(hf_home, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    snapshot = fake_hub_cache(hf_home / "hub", "org/here")
    assert main(["--check-only", "org/here"]) == 0
    assert capsys.readouterr().out.strip() == str(snapshot)
    assert main(["--check-only", "--role", "judge", "org/here", "org/absent"]) == 1
    err = capsys.readouterr().err
    assert "'org/absent' (judge) could not be resolved" in err and "downloads are off" in err


def test_launcher_refuses_an_unresolvable_hub_id_before_starting_anything(hf_home, tmp_path):
    spec = ServerSpec(model="org/verifier-7b", name="verifier", run_dir=tmp_path / "run")
    with pytest.raises(ServerStartError, match="'org/verifier-7b' \\(verifier\\) could not be resolved"):
        launch(spec)
    state = json.loads(spec.state_path.read_text())
    assert state["state"] == "failed" and "org/verifier-7b" in state["error"]
    assert "pid" not in state


def test_launcher_command_serves_the_resolved_snapshot_under_the_ids_name(hf_home, tmp_path):
    snapshot = fake_hub_cache(hf_home / "hub", "Qwen/Qwen2.5-7B-Instruct")
    spec = ServerSpec(model="Qwen/Qwen2.5-7B-Instruct", run_dir=tmp_path, python="py")
    assert spec.role == "Qwen2.5-7B-Instruct"
    cmd, _ = build_command(spec, 8000, on_gpu=True, model_path=resolve_model(spec.model))
    assert cmd[cmd.index("--model") + 1] == str(snapshot)
    assert cmd[cmd.index("--served-model-name") + 1] == "Qwen2.5-7B-Instruct"
