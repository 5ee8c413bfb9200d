"""The partition bed's pure parts: subnet choice, names, and the fault table (no root needed)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from voltha_gevent.testing import netns
from voltha_gevent.testing.ledger_audit import Overlap
from voltha_gevent.testing.netbed_runs import FaultRun, fault_table
from voltha_gevent.testing.summary import format_table


def fake_ip(addrs: str, routes: str):  # type: ignore[no-untyped-def]
    def run(argv, *, check=True):  # type: ignore[no-untyped-def]
        if argv[:4] == ["ip", "-4", "-o", "addr"]:
            return addrs
        if argv[:4] == ["ip", "-4", "-o", "route"]:
            return routes
        raise AssertionError(f"unexpected command {argv}")

    return run


def test_subnet_choice_skips_prefixes_on_interfaces_and_in_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    used_by_addr = ipaddress.ip_network("198.18.7.0/24")
    used_by_route = ipaddress.ip_network("198.18.8.0/23")
    monkeypatch.setattr(netns, "run", fake_ip(
        "2: eth0    inet 198.18.7.1/24 brd 198.18.7.255 scope global eth0\n",
        "default via 192.0.2.1 dev eth0\nblackhole 198.18.8.0/23 table 5\n"))
    monkeypatch.setattr(netns, "_routed_elsewhere", lambda address: False)
    chosen = {netns.choose_subnet(random.Random(seed)) for seed in range(200)}
    assert all(s.prefixlen == 24 and s.subnet_of(netns.POOL) for s in chosen)
    assert not any(s.overlaps(used_by_addr) or s.overlaps(used_by_route) for s in chosen)
    assert len(chosen) > 100


def test_subnet_choice_skips_addresses_with_a_route_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "run", fake_ip("", "default via 192.0.2.1 dev eth0\n"))
    monkeypatch.setattr(netns, "_routed_elsewhere", lambda address: not address.startswith("198.19."))
    assert netns.choose_subnet(random.Random(1)).subnet_of(ipaddress.ip_network("198.19.0.0/16"))
    monkeypatch.setattr(netns, "_routed_elsewhere", lambda address: True)
    with pytest.raises(netns.NetnsError):
        netns.choose_subnet(random.Random(1))


def test_next_hop_compares_gateway_and_device() -> None:
    assert netns._next_hop("198.18.3.1 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0") == ("192.0.2.1", "eth0")
    assert netns._next_hop("default via 192.0.2.1 dev eth0") == ("192.0.2.1", "eth0")
    assert netns._next_hop("198.18.3.1 dev vgbr src 198.18.3.1 uid 0") == (None, "vgbr")


def test_fabric_names_fit_linux_interface_names() -> None:
    fabric = netns.Fabric(prefix="vgabcde")
    assert fabric.outer_link("h1") == "vgabcdeh1" and fabric.namespace("h1") == "vgabcde-h1"
    assert fabric.exec_argv("s0", ["consul"]) == ["ip", "netns", "exec", "vgabcde-s0", "consul"]
    with pytest.raises(ValueError):
        netns.Fabric(prefix="toolongprefix")
    with pytest.raises(ValueError):
        fabric.outer_link("a-very-long-member")


def test_the_fault_table_aggregates_runs_per_fault() -> None:
    overlap = Overlap("item1", "n1(pid 1, run 1)", "n2(pid 2, run 1)", 10.0, 11.0, 1, 20)
    runs = [
        FaultRun("isolate host", "h1", t0=0.0, converged=20.0, recovery=8.0, notes={"serf_critical_s": 5.5}),
        FaultRun("isolate host", "h2", t0=30.0, converged=50.0, recovery=9.0, violations=[overlap],
                 notes={"serf_critical_s": 6.0}),
        FaultRun("loop blocked 6s", "h3", t0=60.0, converged=None, recovery=None),
    ]
    rows = fault_table(runs, {"slow link": "no tbf"})
    assert rows[0][:7] == ["isolate host", "2", "8.5", "9.0", "20.0", "1", "21"]
    assert rows[0][7] == "serf_critical 5.5/6.0"
    assert rows[1][:5] == ["loop blocked 6s", "1", "-", "- (1 never)", "-"]
    assert rows[2] == ["slow link", "0", "-", "-", "-", "-", "-", "not run: no tbf"]
    text = format_table(["fault", "runs", "a", "b", "c", "d", "e", "f"], rows)
    assert text.splitlines()[2].startswith("isolate host     2")
