"""Free TCP ports for the servers the tests start (Ray dashboards and nodes, moto, torch rendezvous).

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the same range every
outgoing connection and every other ``bind(0)`` on the host draws from, so between picking it and
the server binding it, Ray's own start-up (a dozen processes opening sockets) can take it: a Ray
test failed with "address already in use" for its dashboard exactly so. These ports come from
20000-32767 instead, below the kernel's ephemeral range (32768-60999) and above Ray's worker ports
(10002-19999), where nothing is assigned implicitly; a port is only given once per process.
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 20000, 32767
_given: set[int] = set()


def free_port() -> int:
    """A port no one listens on now, outside every range assigned implicitly."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(LOW, HIGH)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {LOW}-{HIGH} after 1000 tries")
