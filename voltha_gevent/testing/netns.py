"""Linux network namespaces on a private bridge, for partition tests (root only).

A :class:`Fabric` builds, under a prefix unique to the run, one bridge in the root namespace
and one network namespace per member, each joined to the bridge by a veth pair (``eth0``
inside), all in one private /24 out of 198.18.0.0/15 (RFC 2544 benchmarking space) that is
checked at run time to be neither on an interface nor routed by anything but the default
route. The root namespace gets the subnet's first address so tests can reach members; the
fabric itself only ever addresses members' addresses. Faults act on one member:

* ``isolate``/``rejoin`` - its bridge-side veth down/up (no packet in or out);
* ``blackhole``/``unblackhole`` - blackhole routes inside its namespace (it cannot send to
  those addresses; every other path, and its own loopback, keep working);
* ``shape``/``unshape`` - a ``tbf`` qdisc on both ends of its veth (a thin, queueing link).

Guarantees: every name carries the prefix; :meth:`Fabric.destroy` deletes every namespace
and link the fabric created (and only those), is idempotent, and also runs at interpreter
exit. Every ``ip``/``tc`` call has a timeout. Processes are not this module's business:
whoever starts one in a namespace stops it, by pid, before :meth:`Fabric.destroy`.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

#: Where subnets come from: RFC 2544's benchmarking range, never routed on the internet.
POOL = ipaddress.ip_network("198.18.0.0/15")
#: Seconds any one ``ip``/``tc`` command may take.
COMMAND_TIMEOUT = 10.0
#: Serializes subnet choice between concurrent test runs on one machine.
LOCK_PATH = Path(tempfile.gettempdir()) / "voltha-netns.lock"
#: How many /24s are tried before giving up.
MAX_SUBNET_TRIES = 64

_LIVE: set[Fabric] = set()


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message has the command and its stderr."""


def run(argv: Sequence[str], *, check: bool = True) -> str:
    """Run ``ip``/``tc`` with a timeout; its stdout. Raises :class:`NetnsError` on failure."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (not root, no ``ip``, no ``ip netns``), or None."""
    if os.geteuid() != 0:
        return "network-namespace tests need root"
    if shutil.which("ip") is None:
        return "network-namespace tests need the ip command (iproute2)"
    probe = f"vgprobe{os.getpid()}"
    try:
        run(["ip", "netns", "add", probe])
    except NetnsError as exc:
        return f"ip netns does not work here: {exc}"
    try:
        run(["ip", "netns", "delete", probe])
    except NetnsError as exc:
        return f"ip netns delete failed: {exc}"
    return None


def qdisc_available(kind: str, args: Sequence[str]) -> str | None:
    """None when a ``kind`` qdisc can be attached to a veth here, else why not."""
    name = f"vgq{os.getpid() % 100000}"
    try:
        run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"])
    except NetnsError as exc:
        return f"cannot create a veth to try {kind}: {exc}"
    try:
        run(["tc", "qdisc", "add", "dev", name, "root", kind, *args])
        return None
    except NetnsError as exc:
        return f"the kernel refuses a {kind} qdisc ({exc})"
    finally:
        run(["ip", "link", "delete", name], check=False)


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix on an interface or in any routing table of the root namespace."""
    used = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    for line in run(["ip", "-4", "-o", "route", "show", "table", "all"]).splitlines():
        parts = [p for p in line.split() if p not in ("unicast", "local", "broadcast", "blackhole",
                                                     "prohibit", "unreachable", "throw", "multicast")]
        if not parts or parts[0] == "default":
            continue
        try:
            used.append(ipaddress.ip_network(parts[0], strict=False))
        except ValueError:
            continue
    return used


def _next_hop(route: str) -> tuple[str | None, str | None]:
    """``(via, dev)`` of one line of ``ip route`` output."""
    parts = route.split()
    via = parts[parts.index("via") + 1] if "via" in parts else None
    dev = parts[parts.index("dev") + 1] if "dev" in parts else None
    return via, dev


def _routed_elsewhere(address: str) -> bool:
    """True when ``address`` has a route of its own (anything but the default route)."""
    done = subprocess.run(["ip", "-4", "route", "get", address], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, check=False)
    if done.returncode != 0:
        return False  # unreachable: not routed at all
    defaults = run(["ip", "-4", "route", "show", "default"]).splitlines()
    return not any(_next_hop(done.stdout) == _next_hop(line) for line in defaults)


def choose_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    """A /24 of :data:`POOL` that nothing on this machine uses or routes (call under the lock)."""
    used = _networks_in_use()
    candidates = list(POOL.subnets(new_prefix=24))
    rng.shuffle(candidates)
    for subnet in candidates[:MAX_SUBNET_TRIES]:
        if any(subnet.overlaps(net) for net in used):
            continue
        if _routed_elsewhere(str(subnet[1])) or _routed_elsewhere(str(subnet[254])):
            continue
        return subnet
    raise NetnsError(f"no free /24 in {POOL} after {MAX_SUBNET_TRIES} tries")


@contextmanager
def _allocation_lock() -> Iterator[None]:
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Fabric:
    """A bridge and one namespace per member; see the module docstring."""

    def __init__(self, prefix: str | None = None, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.prefix = prefix or f"vg{self.rng.randrange(16**5):05x}"
        if len(self.prefix) > 7:
            raise ValueError("the prefix must be at most 7 characters (interface names are <= 15)")
        self.bridge = f"{self.prefix}br"
        self.subnet: ipaddress.IPv4Network | None = None
        self.addresses: dict[str, str] = {}
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self._blackholes: dict[str, set[str]] = {}

    def create(self, members: Sequence[str], first_host: int = 10) -> Fabric:
        """The bridge, then a namespace per member with address ``.first_host + i``."""
        if len(members) + first_host > 250:
            raise ValueError("too many members for one /24")
        _LIVE.add(self)
        with _allocation_lock():
            self.subnet = choose_subnet(self.rng)
            self._link("add", self.bridge, "type", "bridge")
            self.links.append(self.bridge)
            run(["ip", "addr", "add", f"{self.subnet[1]}/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for i, member in enumerate(members):
            self._add_member(member, str(self.subnet[first_host + i]))
        log.info("netns-fabric-created", prefix=self.prefix, subnet=str(self.subnet), members=list(members))
        return self

    def _add_member(self, member: str, address: str) -> None:
        ns, outer = self.namespace(member), self.outer_link(member)
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self._link("add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.links.append(outer)
        run(["ip", "link", "set", outer, "master", self.bridge, "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self.addresses[member] = address

    def _link(self, *args: str) -> None:
        run(["ip", "link", *args])

    def namespace(self, member: str) -> str:
        return f"{self.prefix}-{member}"

    def outer_link(self, member: str) -> str:
        name = f"{self.prefix}{member}"
        if len(name) > 15:
            raise ValueError(f"member name {member!r} makes the interface name {name!r} too long")
        return name

    def exec_argv(self, member: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``member``'s namespace (``ip netns exec`` execs, so the pid is argv's)."""
        return ["ip", "netns", "exec", self.namespace(member), *argv]

    def isolate(self, member: str) -> None:
        run(["ip", "link", "set", self.outer_link(member), "down"])

    def rejoin(self, member: str) -> None:
        run(["ip", "link", "set", self.outer_link(member), "up"])

    def blackhole(self, member: str, addresses: Sequence[str]) -> None:
        """``member`` can no longer send to ``addresses`` (members of this fabric only)."""
        held = self._blackholes.setdefault(member, set())
        for address in addresses:
            self._check_member_address(address)
            if address not in held:
                run(["ip", "-n", self.namespace(member), "route", "add", "blackhole", f"{address}/32"])
                held.add(address)

    def unblackhole(self, member: str) -> None:
        for address in sorted(self._blackholes.pop(member, set())):
            run(["ip", "-n", self.namespace(member), "route", "delete", "blackhole", f"{address}/32"],
                check=False)

    def shape(self, member: str, rate: str = "64kbit", burst: str = "4kb", latency: str = "2s") -> None:
        """A thin link both ways: ``tbf`` at ``rate``, queueing up to ``latency`` before dropping."""
        tbf = ["tbf", "rate", rate, "burst", burst, "latency", latency]
        run(["tc", "qdisc", "replace", "dev", self.outer_link(member), "root", *tbf])
        run(["tc", "-n", self.namespace(member), "qdisc", "replace", "dev", "eth0", "root", *tbf])

    def unshape(self, member: str) -> None:
        run(["tc", "qdisc", "delete", "dev", self.outer_link(member), "root"], check=False)
        run(["tc", "-n", self.namespace(member), "qdisc", "delete", "dev", "eth0", "root"], check=False)

    def heal(self, member: str) -> None:
        """Undo every fault on ``member``."""
        self.rejoin(member)
        self.unblackhole(member)
        self.unshape(member)

    def _check_member_address(self, address: str) -> None:
        if address not in self.addresses.values():
            raise ValueError(f"{address} is not a member of this fabric")

    def destroy(self) -> None:
        """Delete every namespace and link this fabric created; idempotent."""
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "delete", ns], check=False)
        for link in reversed(self.links):
            if run(["ip", "link", "show", link], check=False):
                run(["ip", "link", "delete", link], check=False)
        if self.namespaces or self.links:
            log.info("netns-fabric-destroyed", prefix=self.prefix)
        self.namespaces.clear()
        self.links.clear()
        self._blackholes.clear()
        _LIVE.discard(self)


@atexit.register
def _destroy_leftovers() -> None:
    for fabric in list(_LIVE):
        fabric.destroy()


__all__ = ["POOL", "Fabric", "NetnsError", "choose_subnet", "qdisc_available", "run", "unavailable_reason"]
