"""Serving tests decide themselves whether a server is external: ignore VERLKIT_*_URL from the shell."""

import os

import pytest


@pytest.fixture(autouse=True)
def _no_external_url_from_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("VERLKIT_") and k.endswith("_URL")]:
        monkeypatch.delenv(key)
