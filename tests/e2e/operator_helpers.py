"""Running a document's ```sh blocks as an operator would (issue 14), for the tests that
follow README.md and docs/operations.md in order.

What a test changes in a documented command, and only that: the ports (8080-8099,
7080-7099 and etcd's 2379-2398 become free ports at the same offsets from three free
bases), `.venv/bin/raftkv` and `raftkv` become this interpreter's `python -m raftkv` (a
`raftkv` script first on PATH), `.venv/bin/etcdctl` the dev dependency's etcdctl, and
relative paths land in the test's directory (the working directory of every command;
`steps.log` there keeps what each step printed). Each line runs through `sh -c`, so
redirections work as written. A command that serves (`raftkv serve`, `raftkv dev`) runs in
the background until the test stops it; the test waits for its started line before going
on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from raftkv.testing.etcd_tools import etcd_binary
from raftkv.testing.processes import free_port, server_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]
# How long one command may take (a backup, a join).
COMMAND_TIMEOUT_S = 120
# How long a server may take to print its started line.
START_TIMEOUT_S = 90
# Ports 8080..8080+PORT_SPAN-1 and 7080..7080+PORT_SPAN-1 are moved.
PORT_SPAN = 20


@dataclass
class Step:
    line: str
    # The answer documented under the command (`# {...}`), if any.
    documented: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        """The line without its trailing comment."""
        return self.line.split(" #")[0].strip()


def sh_blocks(document: Path, section: str) -> list[list[Step]]:
    """The ```sh blocks of `document`'s `## section`, as steps (continuation lines joined,
    comments dropped, documented answers kept with their command)."""
    text = document.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    blocks = []
    for block in re.findall(r"```sh\n(.*?)```", body, flags=re.S):
        steps: list[Step] = []
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if line.startswith("# {"):
                steps[-1].documented.append(line[2:])
            elif line and not line.startswith("#"):
                steps.append(Step(line))
        blocks.append(steps)
    return blocks


def free_port_range(count: int) -> int:
    """The first of `count` consecutive ports, all in this worker's range (`server_ports`),
    that were free a moment ago."""
    for _ in range(100):
        base = free_port()
        if base + count > server_ports().stop:
            continue
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise OSError(f"no {count} consecutive free ports")


class Operator:
    """Runs documented command lines in `directory` and keeps the servers they start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.client_base = free_port_range(PORT_SPAN)
        self.peer_base = free_port_range(PORT_SPAN)
        self.etcd_base = free_port_range(PORT_SPAN)
        bin_directory = directory / "bin"
        bin_directory.mkdir()
        script = bin_directory / "raftkv"
        script.write_text(f'#!/bin/sh\nexec {sys.executable} -m raftkv "$@"\n')
        script.chmod(0o755)
        etcdctl = bin_directory / "etcdctl"
        etcdctl.write_text(f'#!/bin/sh\nexec {etcd_binary("etcdctl")} "$@"\n')
        etcdctl.chmod(0o755)
        self.background: dict[str, subprocess.Popen[bytes]] = {}
        self.environment = {
            **os.environ,
            "PATH": f"{bin_directory}{os.pathsep}{os.environ['PATH']}",
            # The CLI's default endpoint, moved with the ports.
            "RAFTKV_ENDPOINTS": self.url(8080),
        }

    def port(self, documented: int) -> int:
        """Where documented port `documented` (8080.., 7080.., 2379..) is moved to."""
        if 8080 <= documented < 8080 + PORT_SPAN:
            return self.client_base + documented - 8080
        if 2379 <= documented < 2379 + PORT_SPAN:
            return self.etcd_base + documented - 2379
        assert 7080 <= documented < 7080 + PORT_SPAN, documented
        return self.peer_base + documented - 7080

    def url(self, documented: int) -> str:
        return f"http://127.0.0.1:{self.port(documented)}"

    def moved(self, line: str) -> str:
        """`line` with its ports moved and `raftkv` made this interpreter's."""
        line = re.sub(
            r"(?<![\d.])((?:80|70)[89]\d|23(?:79|8\d|9[0-8]))(?!\d)",
            lambda match: str(self.port(int(match.group(1)))),
            line,
        )
        return re.sub(r"(?<![\w/.-])\.venv/bin/(raftkv|etcdctl)\b", r"\1", line)

    def shell(self, line: str) -> list[str]:
        return ["sh", "-c", self.moved(line)]

    def start(self, line: str, name: str, ready: str, **environment: str) -> None:
        """Run `line`, a command that serves, in the background; wait until it prints
        `ready`."""
        out = self.directory / f"{name}.out"
        err = self.directory / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                ["sh", "-c", "exec " + self.moved(line)],
                cwd=self.directory,
                env={**self.environment, **environment},
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        self.background[name] = process

        def printed() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{line} exited: {err.read_text()}")
            return ready in out.read_text()

        wait_until(printed, START_TIMEOUT_S, f"{name} to print {ready}")

    def run(
        self, step: Step, *, exit_codes: tuple[int, ...] = (0,), **environment: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `step`; it must exit with one of `exit_codes`, print no traceback and, if it
        is a curl line or has a documented answer, answer as documented."""
        done = subprocess.run(
            self.shell(step.line),
            cwd=self.directory,
            env={**self.environment, **environment},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        with (self.directory / "steps.log").open("a") as log:
            log.write(f"$ {step.line}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n")
        what = (step.line, done.returncode, done.stdout, done.stderr)
        assert done.returncode in exit_codes, what
        assert "Traceback" not in done.stderr, what
        if done.returncode == 0 and step.line.startswith("curl "):
            answer = json.loads(done.stdout)
            assert "error" not in answer, what
        for documented in step.documented:
            same_shape(json.loads(done.stdout), json.loads(documented.replace(",...", "")))
        return done

    def get(self, documented_port: int, path: str) -> Any:
        answer = httpx.get(f"{self.url(documented_port)}{path}", timeout=10)
        return answer.json()

    def stop(self, name: str) -> None:
        """SIGTERM the server `name` (as Ctrl-C would) and wait for it to exit."""
        process = self.background.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for process in self.background.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in list(self.background):
            self.stop(name)


def same_shape(answer: Any, documented: Any) -> None:
    """`answer` has every field `documented` shows, with the documented value where it is
    not a number (revisions and leader ids depend on the run)."""
    if isinstance(documented, dict):
        assert isinstance(answer, dict), (answer, documented)
        for name, value in documented.items():
            assert name in answer, (name, answer)
            same_shape(answer[name], value)
    elif not isinstance(documented, int):
        assert answer == documented, (answer, documented)
