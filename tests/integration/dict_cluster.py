"""Drive `examples/replicated_dict.py` as real processes (gRPC on loopback + RocksDB).

Each process reads tagged commands on stdin and answers JSON lines on stdout; a reader
thread files the answers by tag. Every wait is bounded and polls a condition.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from raftkv.testing.processes import free_port, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "replicated_dict.py"


class DictProcess:
    def __init__(
        self, node_id: int, cluster: dict[int, str], data_dir: Path, join: str | None = None
    ) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.data_dir = data_dir
        self.join = join
        self.process: subprocess.Popen[bytes] | None = None
        self._tags = itertools.count()
        self._answers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._started: queue.Queue[bool] = queue.Queue()
        self._reader: threading.Thread | None = None
        self.log_path = data_dir.parent / f"node-{node_id}.log"

    def start(self) -> None:
        members = ",".join(f"{key}={value}" for key, value in sorted(self.cluster.items()))
        command = [
            sys.executable,
            str(EXAMPLE),
            "--id",
            str(self.node_id),
            "--cluster",
            members,
            "--data-dir",
            str(self.data_dir),
            "--tick-ms",
            "50",
        ]
        if self.join:
            command += ["--join", self.join]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self._answers = {}
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        try:
            self._started.get(timeout=60)
        except queue.Empty as error:
            raise AssertionError(f"node {self.node_id} did not start: {self.log()}") from error

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                answer = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if "started" in answer:
                self._started.put(True)
            elif "tag" in answer:
                with self._lock:
                    self._answers[answer["tag"]] = answer

    def send(self, command: str) -> str:
        """Send without waiting; returns the tag to collect the answer with."""
        assert self.process is not None and self.process.stdin is not None
        tag = f"{self.node_id}-{next(self._tags)}"
        self.process.stdin.write(f"@{tag} {command}\n".encode())
        self.process.stdin.flush()
        return tag

    def answer(self, tag: str) -> dict[str, Any] | None:
        with self._lock:
            return self._answers.get(tag)

    def call(self, command: str, timeout: float = 20.0) -> dict[str, Any]:
        tag = self.send(command)
        wait_until(lambda: self.answer(tag) is not None, timeout, f"{command!r} on {self}")
        answer = self.answer(tag)
        assert answer is not None
        return answer

    def status(self) -> dict[str, Any]:
        answer = self.call("status")
        assert answer["ok"], answer
        result: dict[str, Any] = answer["result"]
        return result

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._release()

    def _release(self) -> None:
        """Close the pipes of an exited process (after its answers are read)."""
        assert self.process is not None
        if self._reader is not None:
            self._reader.join(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()

    def stop(self) -> None:
        if self.process is None:
            return
        if not self.alive():
            self._release()
            return
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(b"quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=20)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=30)
        self._release()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def __repr__(self) -> str:
        return f"node {self.node_id}"


class DictCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.cluster = {node_id: f"127.0.0.1:{free_port()}" for node_id in range(1, size + 1)}
        self.nodes = {
            node_id: DictProcess(node_id, self.cluster, root / f"data-{node_id}")
            for node_id in self.cluster
        }

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.alive():
                node.stop()

    def leader(self, timeout: float = 30.0, among: list[int] | None = None) -> DictProcess:
        """Wait until the running nodes (or `among`) agree on one leader; return it."""
        found: list[DictProcess] = []
        candidates = among or [node_id for node_id, node in self.nodes.items() if node.alive()]

        def agreed() -> bool:
            leaders = {self.nodes[node_id].status()["leader"] for node_id in candidates}
            if len(leaders) != 1 or 0 in leaders:
                return False
            leader = leaders.pop()
            if leader not in self.nodes or not self.nodes[leader].alive():
                return False
            found[:] = [self.nodes[leader]]
            return True

        wait_until(agreed, timeout, "a leader all nodes agree on")
        return found[0]
