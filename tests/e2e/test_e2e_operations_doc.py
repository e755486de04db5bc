"""docs/operations.md, followed in order against real processes (issue 14): every ```sh
block an operator on one machine would type, in document order, each succeeding as
written (or refusing as the document says it does).

What is changed is what `operator_helpers` changes (the ports, the `raftkv` executable,
the working directory), plus what SKIPPED and SUBSTITUTED list. Between blocks the test
waits for what an operator would wait for (a server's started line, a joining node to be
a voter, a learner to have caught up) and stops what the document says is stopped."""

from __future__ import annotations

import json
import re
from pathlib import Path

from operator_helpers import ROOT, Operator, Step, sh_blocks

from raftkv.testing.processes import wait_until

OPERATIONS = ROOT / "docs" / "operations.md"

# Blocks not run, with the reason.
SKIPPED = {
    ("Running a node: `raftkv serve`", 0): "three machines (10.0.0.1-3)",
}
# Blocks run, in this order.
FOLLOWED = {
    ("Settings", 0),
    ("A local cluster: `raftkv dev`", 0),
    ("Changing the cluster", 0),
    ("Backup and restore", 0),
    ("Disaster recovery", 0),
}
# Lines run with more than ports moved, with what and why.
SUBSTITUTED = {
    "Settings": "RAFTKV_LISTEN_CLIENT and RAFTKV_LISTEN_PEER move the default ports, which "
    "`config show` writes into node-2.toml",
    "Backup and restore": "`restore --id 1` and `serve --id 1` are run for founders 2 and 3 "
    "too (the document: 'restore every founder'), with their ids, data dirs and ports",
    "Disaster recovery": "the member is the restored cluster's founder 2 (data/new-2, "
    "serving on 8091/7091, which the document's `...` stands for) after founders 1 and 3 "
    "are stopped for good",
}


def test_every_sh_block_is_run_or_skipped() -> None:
    """A section with ```sh blocks that this file does not follow would go untested."""
    sections = re.findall(r"^## (.+)$", OPERATIONS.read_text(), flags=re.M)
    with_blocks = {
        (section, index)
        for section in sections
        for index in range(len(sh_blocks(OPERATIONS, section)))
    }
    assert with_blocks == FOLLOWED | SKIPPED.keys()


def blocks(section: str, count: int) -> list[list[Step]]:
    found = sh_blocks(OPERATIONS, section)
    assert len(found) == count, (section, found)
    return found


def voters(operator: Operator, port: int) -> dict[int, str]:
    members = operator.get(port, "/v1/cluster")["members"]
    return {member["id"]: member["role"] for member in members}


def promoted(operator: Operator, step: Step) -> bool:
    done = operator.run(step, exit_codes=(0, 3))
    assert done.returncode == 0 or "not_caught_up" in done.stderr, done.stderr
    return done.returncode == 0


def data_hash(operator: Operator, port: int) -> str:
    status = operator.get(port, "/v1/status?hash=true")
    assert status["data_hash"], status
    return str(status["data_hash"])


def test_the_operations_guide_runs_in_order(tmp_path: Path) -> None:
    operator = Operator(tmp_path)
    try:
        # Running a node: the only block is three machines. Its certificates are made here
        # (for their addresses: nothing dials them); the machines are not.
        ((certs, serve, *_),) = blocks("Running a node: `raftkv serve`", 1)
        assert serve.line.startswith("raftkv serve --id 1 --data-dir /var/lib/raftkv")
        operator.run(certs)
        for name in ("ca.pem", "node-1.pem", "node-3-key.pem", "client-alice-key.pem"):
            assert (tmp_path / "certs" / name).exists(), name

        # Settings: write the effective settings to a file, serve from it, stop it.
        ((config_show, serve_config),) = blocks("Settings", 1)
        defaults = {
            "RAFTKV_LISTEN_CLIENT": f"127.0.0.1:{operator.port(8080)}",
            "RAFTKV_LISTEN_PEER": f"127.0.0.1:{operator.port(7080)}",
        }
        operator.run(config_show, **defaults)
        assert 'data_dir = "data/2"' in (tmp_path / "node-2.toml").read_text()
        operator.start(serve_config.line, "node-2", '"started": 2', **defaults)
        operator.stop("node-2")

        # A local cluster.
        ((dev,),) = blocks("A local cluster: `raftkv dev`", 1)
        operator.start(dev.line, "dev", '"ready"')
        # The user's data, for the backup below to hold something.
        for key in ("color", "shape", "size"):
            operator.run(Step(f"raftkv put {key} value-of-{key}"))

        # Changing the cluster.
        (changing,) = blocks("Changing the cluster", 1)
        lines = [step.command for step in changing]
        assert lines[0].startswith("raftkv serve --id 4")
        operator.start(changing[0].line, "node-4", '"started": 4')
        wait_until(
            lambda: voters(operator, 8081).get(4) in ("voter", "leader"),
            90,
            "node 4 to be promoted",
        )
        for step in changing[1:]:
            if step.command.startswith("raftkv serve --id 5"):
                operator.start(step.line, "node-5", '"started": 5')
            elif step.command == "raftkv member promote 5":
                # Refused (exit 3) until node 5 caught up, as the comment says: retried.
                wait_until(
                    lambda step=step: promoted(operator, step), 60, "member 5 to be promoted"
                )
            else:
                operator.run(step)
        assert voters(operator, 8081).keys() == {2, 3, 4, 5}

        # Backup and restore.
        (backup,) = blocks("Backup and restore", 1)
        save, restore, serve, hashkv = backup
        assert save.command.startswith("raftkv snapshot save backup.raftkv")
        operator.run(save)
        source_hash = data_hash(operator, 8081)
        cluster_ids = set()
        for founder in (1, 2, 3):
            done = operator.run(Step(founder_line(restore.line, founder)))
            # "prints {"restored", ..., "cluster_id": N, ...}"
            restored = json.loads(done.stdout)
            assert restored["restored"] == "backup.raftkv", restored
            cluster_ids.add(restored["cluster_id"])
        assert len(cluster_ids) == 1, cluster_ids
        for founder in (1, 2, 3):
            operator.start(
                founder_line(serve.line, founder), f"new-{founder}", f'"started": {founder}'
            )
        wait_until(lambda: voters(operator, 8090).get(1) is not None, 30, "a leader")
        operator.run(hashkv)
        for port in (8090, 8091, 8092):
            wait_until(
                lambda port=port: data_hash(operator, port) == source_hash,
                30,
                f"{port} to hold the backup's data",
            )

        # Disaster recovery: founders 1 and 3 are gone for good; 2 is stopped.
        (recovery,) = blocks("Disaster recovery", 1)
        recover, serve_recovered = recovery
        for founder in (1, 3, 2):
            operator.stop(f"new-{founder}")
        operator.run(Step(recover.line.replace("data/2", "data/new-2")))
        operator.start(
            serve_recovered.line.replace("data/2", "data/new-2").replace(
                "...", "--listen-client 127.0.0.1:8091 --listen-peer 127.0.0.1:7091"
            ),
            "recovered-2",
            '"started": 2',
        )
        operator.run(Step("raftkv put after recovery --endpoints http://127.0.0.1:8091"))
        assert voters(operator, 8091) == {2: "leader"}
    finally:
        operator.stop_all()


def founder_line(line: str, founder: int) -> str:
    """The restore or serve line of founder 1 for `founder`."""
    return (
        line.replace("--id 1", f"--id {founder}")
        .replace("data/new-1", f"data/new-{founder}")
        .replace("127.0.0.1:8090", f"127.0.0.1:{8089 + founder}")
        .replace("--listen-peer 127.0.0.1:7090", f"--listen-peer 127.0.0.1:{7089 + founder}")
    )
