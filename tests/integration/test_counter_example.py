"""examples/counter.py runs as three processes and counts across them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dict_cluster import free_port, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "counter.py"


def test_counter_example_as_three_processes(tmp_path: Path) -> None:
    cluster = ",".join(f"{node_id}=127.0.0.1:{free_port()}" for node_id in (1, 2, 3))
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE),
                "--id",
                str(node_id),
                "--cluster",
                cluster,
                "--data-dir",
                str(tmp_path / f"counter-{node_id}"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for node_id in (1, 2, 3)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert "started" in process.stdout.readline()

        def ask(process: subprocess.Popen[str], line: str) -> str:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(line + "\n")
            process.stdin.flush()
            return process.stdout.readline().strip()

        # The first write may race the first election: retry until one succeeds.
        answers: list[str] = []
        wait_until(
            lambda: answers.append(ask(processes[1], "incr 5")) or answers[-1] == "5",
            30,
            "the first increment",
        )
        assert ask(processes[2], "incr") == "6"
        assert ask(processes[0], "get") == "6"
    finally:
        for process in processes:
            if process.poll() is None:
                assert process.stdin is not None
                process.stdin.write("quit\n")
                process.stdin.flush()
        for process in processes:
            process.wait(timeout=30)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
