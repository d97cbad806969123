"""Serving tests decide themselves whether a server is external: ignore VERLKIT_*_URL from the shell."""

import pytest
from support.server_processes import forget_external_urls


@pytest.fixture(autouse=True)
def _no_external_url_from_env(monkeypatch):
    forget_external_urls(monkeypatch)
