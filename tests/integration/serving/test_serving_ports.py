"""Port helpers on real loopback sockets (the unit tier has IP sockets disabled)."""

import socket

from verlkit.serving.processes import pick_free_port, port_is_free


def test_a_listening_port_is_taken_and_a_picked_one_is_free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert not port_is_free("127.0.0.1", s.getsockname()[1])
    port = pick_free_port("127.0.0.1")
    assert 0 < port < 65536 and port_is_free("127.0.0.1", port)
