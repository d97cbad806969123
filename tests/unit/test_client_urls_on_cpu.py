"""Server addresses: the /v1 base URL clients are given, and the server root vLLM's other routes use."""

from verlkit.clients.urls import normalize_base_url, server_root


def test_base_urls_end_in_v1_without_a_slash():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


def test_server_root_is_the_base_url_without_v1():
    assert server_root("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    assert server_root("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
