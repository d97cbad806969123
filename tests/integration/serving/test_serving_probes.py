"""Readiness probing and LoRA loading when nothing listens (no server is started in the unit tier;
the answers of a real vLLM server are checked in tests/integration/serving)."""

import socket

import pytest

from verlkit.serving import ServerStartError, load_lora_adapter, probe
from verlkit.serving.probes import NotReadyInTime, wait_until_ready


@pytest.fixture
def closed_url() -> str:
    """http://127.0.0.1:PORT/v1 where nothing listens (a port just released by us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_probe_of_a_closed_port_is_not_ready_and_says_where_it_failed(closed_url):
    ready, reason, served = probe(closed_url, "m", timeout=5)
    assert ready is False and served is None and reason.startswith("/v1/models: ")


def test_waiting_backs_off_between_probes(closed_url):
    pauses = []

    class Enough(Exception):
        pass

    def pause(seconds):
        pauses.append(seconds)
        if len(pauses) == 3:
            raise Enough

    with pytest.raises(Enough):
        wait_until_ready(closed_url, "m", timeout_s=600, pause=pause)
    assert pauses == pytest.approx([0.2, 0.3, 0.45])


def test_waiting_gives_up_with_the_last_reason(closed_url):
    with pytest.raises(NotReadyInTime) as err:
        wait_until_ready(closed_url, "m", timeout_s=0.3)
    assert err.value.reason.startswith("/v1/models: ")


def test_no_time_at_all_means_not_probed():
    with pytest.raises(NotReadyInTime, match="not probed yet"):
        wait_until_ready("http://127.0.0.1:9/v1", "m", timeout_s=0)


def test_loading_an_adapter_into_no_server_names_adapter_and_server(closed_url, tmp_path):
    with pytest.raises(ServerStartError, match=f"loading LoRA adapter 'tuned' into {closed_url} failed"):
        load_lora_adapter(closed_url[: -len("/v1")], "tuned", tmp_path)
