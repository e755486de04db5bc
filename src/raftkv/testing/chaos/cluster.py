"""The cluster under test: `raftkv serve` processes, one per lab slot, that the runner
kills, pauses, partitions, fills up, removes and replaces.

A node's id is its slot: a replacement gets a new id and a new slot (removed ids are never
reused). Its data dir is a tmpfs (`lab.Disk`) under the run's directory; its stdout and
stderr go to files beside it, read by the checks afterwards. Every process is started in a
session of its own and stopped by its PID, SIGKILL after SIGCONT, in `close()`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from raftkv.testing.chaos.lab import Disk, NetworkLab

CLIENT_PORT = 8080
PEER_PORT = 7080
DISK_BYTES = 256 * 1024 * 1024


class ChaosError(Exception):
    """The cluster did not reach a state the run needs (a bounded wait ran out)."""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 0.1 s; ChaosError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ChaosError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class ChaosNode:
    id: int
    disk: Disk
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    # Exit codes of every process of this node that ended by itself (not killed by us).
    exits: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ChaosCluster:
    def __init__(self, lab: NetworkLab, root: Path, *, settings: list[str]) -> None:
        self.lab = lab
        self.root = root
        self.settings = settings
        self.nodes: dict[int, ChaosNode] = {}
        self._commands: dict[int, list[str]] = {}
        # Members of the cluster as the runner made it (removed ones leave this set).
        self.members: set[int] = set()
        self.http = httpx.Client(timeout=3.0)

    # -- where things are --------------------------------------------------------------------

    def url(self, node: int) -> str:
        return f"http://{self.lab.address(node)}:{CLIENT_PORT}"

    def peer(self, node: int) -> str:
        return f"{self.lab.address(node)}:{PEER_PORT}"

    def log_path(self, node: int) -> Path:
        return self.root / f"node-{node}.err"

    def logs(self) -> dict[int, str]:
        return {
            node: self.log_path(node).read_text(errors="replace")
            for node in self.nodes
            if self.log_path(node).exists()
        }

    # -- life and death ----------------------------------------------------------------------

    def create(self, size: int) -> None:
        """Slots, disks and processes of a new cluster of `size` founding members."""
        for node in range(1, size + 1):
            self._prepare(node)
        founders = ",".join(f"{node}={self.peer(node)}" for node in range(1, size + 1))
        for node in range(1, size + 1):
            self._spawn(node, ["--initial-cluster", founders])
            self.members.add(node)

    def add(self, join_via: int) -> int:
        """A new node (new id, new slot) joining through member `join_via`, auto-promoted."""
        node = max(self.nodes) + 1
        self._prepare(node)
        self._spawn(node, ["--join", self.url(join_via), "--auto-promote"])
        self.members.add(node)
        return node

    def _prepare(self, node: int) -> None:
        self.lab.add_slot(node)
        disk = Disk(self.root / f"data-{node}", DISK_BYTES)
        disk.mount()
        self.nodes[node] = ChaosNode(node, disk)

    def _spawn(self, node: int, membership: list[str]) -> None:
        address = self.lab.address(node)
        command = [
            *self.lab.exec_prefix(node),
            sys.executable,
            "-m",
            "raftkv",
            "serve",
            "--id",
            str(node),
            "--data-dir",
            str(self.nodes[node].disk.path),
            "--listen-client",
            f"{address}:{CLIENT_PORT}",
            "--advertise-client-url",
            self.url(node),
            "--listen-peer",
            self.peer(node),
            *membership,
            *self.settings,
        ]
        self._commands[node] = command
        self._launch(node)

    def restart(self, node: int) -> None:
        """Start `node` again on its data dir (after a kill or a failure)."""
        chaos_node = self.nodes[node]
        if chaos_node.running:
            return
        self._note_exit(chaos_node)
        self._launch(node)

    def _launch(self, node: int) -> None:
        command = self._commands[node]
        with (
            (self.root / f"node-{node}.out").open("ab") as out,
            self.log_path(node).open("ab") as err,
        ):
            self.nodes[node].process = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def kill(self, node: int) -> None:
        chaos_node = self.nodes[node]
        if chaos_node.process is not None and chaos_node.process.poll() is None:
            self.resume(node)
            chaos_node.process.send_signal(signal.SIGKILL)
            chaos_node.process.wait(timeout=30)
        chaos_node.process = None

    def pause(self, node: int) -> None:
        chaos_node = self.nodes[node]
        if chaos_node.running and not chaos_node.paused:
            assert chaos_node.process is not None
            chaos_node.process.send_signal(signal.SIGSTOP)
            chaos_node.paused = True

    def resume(self, node: int) -> None:
        chaos_node = self.nodes[node]
        if chaos_node.paused and chaos_node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                chaos_node.process.send_signal(signal.SIGCONT)
        chaos_node.paused = False

    def _note_exit(self, chaos_node: ChaosNode) -> None:
        process = chaos_node.process
        if process is not None and process.returncode is not None:
            chaos_node.exits.append(process.returncode)
        chaos_node.process = None

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.kill(node)
        for chaos_node in self.nodes.values():
            chaos_node.disk.close()
        self.http.close()

    # -- what the nodes say -----------------------------------------------------------------

    def get(self, node: int, path: str, timeout: float = 2.0) -> tuple[int, Any] | None:
        try:
            response = self.http.get(f"{self.url(node)}{path}", timeout=timeout)
            return response.status_code, response.json()
        except (httpx.HTTPError, ValueError):
            return None

    def status(self, node: int) -> dict[str, Any] | None:
        answer = self.get(node, "/v1/status")
        if answer is None or answer[0] != 200:
            return None
        body: dict[str, Any] = answer[1]
        return body

    def leader(self) -> int | None:
        """The leader every running member agrees on, or None."""
        leaders = set()
        for node in sorted(self.members):
            if not self.nodes[node].running or self.nodes[node].paused:
                continue
            status = self.status(node)
            leaders.add(0 if status is None else status["leader"])
        if len(leaders) == 1:
            (leader,) = leaders
            return leader if leader in self.members else None
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> int:
        found: list[int] = []

        def agreed() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            found.append(leader)
            return True

        wait_for(agreed, timeout, "a leader every running member knows")
        return found[-1]

    def voters(self, via: int) -> set[int]:
        answer = self.get(via, "/v1/cluster")
        if answer is None or answer[0] != 200:
            return set()
        return {member["id"] for member in answer[1]["members"] if member["role"] == "voter"}
