"""The README's commands, run in the order a newcomer types them (issue 14): `make run`,
the Quick start's curl and CLI lines, then growing the cluster, removing member 1 and
taking a backup. Each must succeed as written; a documented answer (`# {...}` under a curl
line) must have the shape shown.

What is changed, and only that: the ports (8080-8083 and 7080-7083 become free ports, in
the same order), `make run` becomes the `raftkv dev` it runs (with those ports and a data
dir under the test's directory), `.venv/bin/raftkv` and `raftkv` become this
interpreter's `python -m raftkv`, relative paths land in the test's directory, and
`RAFTKV_ENDPOINTS` names the moved port 8080 (the CLI's default endpoint). A command that
serves (`raftkv serve`) runs in the background until the test ends, and the test waits
for what an operator would wait for before going on: the node to be a voter."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kv_processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# How long one command may take (a backup, a join).
COMMAND_TIMEOUT_S = 120


@dataclass
class Step:
    line: str
    # The answer documented under the command (`# {...}`), if any.
    documented: list[str] = field(default_factory=list)


def sh_blocks(section: str) -> list[list[Step]]:
    """The ```sh blocks of README section `section`, as steps (continuation lines joined,
    comments dropped, documented answers kept with their command)."""
    text = README.read_text()
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


class Operator:
    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.client_base, self.peer_base = free_port(), free_port()
        self.background: list[subprocess.Popen[bytes]] = []
        self.environment = {
            **os.environ,
            "RAFTKV_ENDPOINTS": f"http://127.0.0.1:{self.client_base}",
        }

    def moved(self, line: str) -> str:
        def port(match: re.Match[str]) -> str:
            base = self.client_base if match.group(1) == "80" else self.peer_base
            return str(base + int(match.group(2)) - 80)

        return re.sub(r"(?<![\d.])(80|70)(8[0-3])(?!\d)", port, line)

    def argv(self, line: str) -> list[str]:
        words = shlex.split(self.moved(line), comments=True)
        if words[:2] == ["make", "run"]:
            return [
                *self.raftkv(),
                "dev",
                "--base-port",
                str(self.client_base),
                "--peer-base-port",
                str(self.peer_base),
                "--data-dir",
                "data/dev",
            ]
        if words[0] in (".venv/bin/raftkv", "raftkv"):
            return [*self.raftkv(), *words[1:]]
        return words

    @staticmethod
    def raftkv() -> list[str]:
        return [sys.executable, "-m", "raftkv"]

    def start(self, argv: list[str], name: str, ready: str) -> None:
        """Run a command that serves in the background; wait until it prints `ready`."""
        out = self.directory / f"{name}.out"
        err = self.directory / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                argv,
                cwd=self.directory,
                env=self.environment,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.PIPE,  # raftkv serve --stop-on-stdin-eof is not used here
            )
        self.background.append(process)

        def printed() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{argv} exited: {err.read_text()}")
            return ready in out.read_text()

        wait_until(printed, 90, f"{name} to print {ready}")

    def run(self, step: Step) -> str:
        argv = self.argv(step.line)
        done = subprocess.run(
            argv,
            cwd=self.directory,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, (step.line, argv, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (step.line, done.stderr)
        if argv[0] == "curl":
            answer = json.loads(done.stdout)
            assert "error" not in answer, (step.line, answer)
        for documented in step.documented:
            same_shape(json.loads(done.stdout), json.loads(documented.replace(",...", "")))
        return done.stdout

    def cluster(self) -> dict[str, Any]:
        answer = httpx.get(f"http://127.0.0.1:{self.client_base + 1}/v1/cluster", timeout=5)
        document: dict[str, Any] = answer.json()
        return document

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.background:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdin is not None:
                process.stdin.close()


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


def test_the_readme_runs_in_order(tmp_path: Path) -> None:
    operator = Operator(tmp_path)
    try:
        quick_start = sh_blocks("Quick start")
        assert [step.line.split("#")[0].strip() for step in quick_start[0]] == [
            "make run",
            "make test",
        ]
        operator.start(operator.argv("make run"), "dev", '"ready"')
        for step in quick_start[1]:
            operator.run(step)

        server_blocks = sh_blocks("The server and the CLI")
        # The first block is three machines; the second runs on this one.
        growing = server_blocks[1]
        assert growing[0].line.startswith("raftkv serve --id 4")
        operator.start(operator.argv(growing[0].line), "node-4", '"started": 4')

        def node_4_votes() -> bool:
            members = {member["id"]: member["role"] for member in operator.cluster()["members"]}
            return members.get(4) in ("voter", "leader")

        wait_until(node_4_votes, 90, "node 4 to be promoted")
        for step in growing[1:]:
            operator.run(step)
        members = {member["id"] for member in operator.cluster()["members"]}
        assert members == {2, 3, 4}
        assert (tmp_path / "backup.raftkv").stat().st_size > 0
    finally:
        operator.stop()
