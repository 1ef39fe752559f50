import socket

from ports import HIGH, LOW, free_port


def test_free_ports_avoid_the_ephemeral_and_ray_worker_ranges_and_are_bindable():
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20, "a port is handed out once per process"
    for port in ports:
        assert LOW <= port <= HIGH and not low <= port <= high and not 10002 <= port <= 19999
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
