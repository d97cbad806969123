"""The unit tier: no network, no servers, no trainers.

Every unit test runs with IP sockets disabled (Unix sockets stay: asyncio's self-pipe and
multiprocessing use them), so a unit test that reaches for a server fails at once instead of
depending on one. Tests that need a server belong in tests/integration.
"""

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_ip_sockets():
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
