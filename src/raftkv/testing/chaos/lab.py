"""The chaos lab: one network namespace per node, joined by a bridge, with partitions
made of blackhole routes; and one small tmpfs per node's data dir, to fill up on demand.

Everything it creates is named after a random run id (`rkc<id>...`) and torn down by
`close()`, which never raises and is safe to call twice: the runner calls it in a
`finally`. Needs root (namespaces, mounts) and iproute2's `ip`; nothing is sent outside
the namespaces and the bridge (a private /24 under 10.77.0.0/16, never routed elsewhere).

Topology: node slot i lives in namespace `rkc<id>n<i>` at 10.77.<net>.<i>/24 (interface
`eth0`, the peer end of veth `rkc<id>v<i>` on bridge `rkc<id>br`). The root namespace,
where the workload's clients run, is 10.77.<net>.254 on the bridge. A partition between
slots i and j is a blackhole route to j in i's namespace and one to i in j's: TCP between
them stops both ways (a connection's answers are routed too), clients keep reaching both.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# A private range the lab owns; each run takes one /24 of it.
_NETWORK_PREFIX = "10.77"
ROOT_HOST = 254


class LabError(Exception):
    """The lab could not be set up (not root, no `ip`, a command failed)."""


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise LabError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")


def _quietly(*command: str) -> None:
    with contextlib.suppress(LabError, OSError, subprocess.TimeoutExpired):
        _run(*command)


def check_can_run() -> str:
    """'' if this process can build a lab, else why not (one line)."""
    if os.geteuid() != 0:
        return "the chaos lab needs root (network namespaces, tmpfs mounts)"
    for tool in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"):
        if os.path.exists(tool):
            return ""
    return "the chaos lab needs iproute2's `ip` command"


@dataclass
class NetworkLab:
    """Namespaces, veths, the bridge, and the partition routes between slots."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    net: int = field(default_factory=lambda: 1 + secrets.randbelow(250))
    _slots: set[int] = field(default_factory=set)
    _cuts: set[tuple[int, int]] = field(default_factory=set)
    _bridge_up: bool = False

    @property
    def bridge(self) -> str:
        return f"rkc{self.run_id}br"

    def namespace(self, slot: int) -> str:
        return f"rkc{self.run_id}n{slot}"

    def address(self, slot: int) -> str:
        return f"{_NETWORK_PREFIX}.{self.net}.{slot}"

    def open(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_up = True
        _run("ip", "addr", "add", f"{self.address(ROOT_HOST)}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add_slot(self, slot: int) -> None:
        """A namespace for node slot `slot` (1..253), reachable at `address(slot)`."""
        if not 1 <= slot < ROOT_HOST:
            raise LabError(f"slot {slot} is out of range 1..{ROOT_HOST - 1}")
        namespace, veth = self.namespace(slot), f"rkc{self.run_id}v{slot}"
        _run("ip", "netns", "add", namespace)
        self._slots.add(slot)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _run("ip", "link", "set", f"{veth}p", "netns", namespace)
        _run("ip", "link", "set", veth, "master", self.bridge)
        _run("ip", "link", "set", veth, "up")
        inside = ("ip", "netns", "exec", namespace, "ip")
        _run(*inside, "link", "set", f"{veth}p", "name", "eth0")
        _run(*inside, "addr", "add", f"{self.address(slot)}/24", "dev", "eth0")
        _run(*inside, "link", "set", "eth0", "up")
        _run(*inside, "link", "set", "lo", "up")

    def exec_prefix(self, slot: int) -> list[str]:
        """Prefix a command with this to run it inside slot `slot`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(slot)]

    def cut(self, first: int, second: int) -> None:
        """Partition slots `first` and `second` from each other."""
        for here, there in ((first, second), (second, first)):
            if (here, there) not in self._cuts:
                _run(
                    *self.exec_prefix(here), "ip", "route", "add", "blackhole", self.address(there)
                )
                self._cuts.add((here, there))

    def heal(self) -> None:
        """Remove every partition."""
        for here, there in sorted(self._cuts):
            _quietly(
                *self.exec_prefix(here), "ip", "route", "del", "blackhole", self.address(there)
            )
        self._cuts.clear()

    @property
    def cuts(self) -> frozenset[tuple[int, int]]:
        return frozenset(self._cuts)

    def close(self) -> None:
        self.heal()
        for slot in sorted(self._slots):
            _quietly("ip", "netns", "del", self.namespace(slot))
            _quietly("ip", "link", "del", f"rkc{self.run_id}v{slot}")
        self._slots.clear()
        if self._bridge_up:
            _quietly("ip", "link", "del", self.bridge)
            self._bridge_up = False


@dataclass
class Disk:
    """A tmpfs of `size_bytes` mounted at `path`: a node's data dir that can fill up."""

    path: Path
    size_bytes: int
    mounted: bool = False

    @property
    def filler(self) -> Path:
        return self.path / "chaos-filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", f"size={self.size_bytes}", "tmpfs", str(self.path))
        self.mounted = True

    def fill(self) -> None:
        """Take all the free space but a few KiB: the node's next write fails (ENOSPC).
        The node writes meanwhile, so the space taken is what is free when it is asked
        for, tried again (smaller) if the node took some first."""
        with open(self.filler, "ab") as file:
            for _ in range(20):
                free = os.statvfs(self.path)
                left = free.f_bavail * free.f_frsize - 16 * 1024
                if left <= 0:
                    return
                try:
                    os.posix_fallocate(file.fileno(), os.fstat(file.fileno()).st_size, left)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def wipe(self) -> None:
        """Empty it (a member replaced by a new one leaves nothing behind)."""
        if self.mounted:
            _quietly("umount", "-l", str(self.path))
            self.mounted = False
        self.mount()

    def close(self) -> None:
        if self.mounted:
            _quietly("umount", "-l", str(self.path))
            self.mounted = False
