"""The README's commands, run in the order a newcomer types them (issue 14): `make run`,
the Quick start's curl and CLI lines, then growing the cluster, removing member 1, taking
a backup, and enabling auth with a user who may write one prefix. Each must succeed as
written; a documented answer (`# {...}` under a curl line) must have the shape shown.

What is changed is what `operator_helpers` changes (the ports, the `raftkv` executable,
the working directory), and `make run` becomes the `raftkv dev` it runs. The test waits
for what an operator would wait for before going on: node 4 to be a voter."""

from __future__ import annotations

from pathlib import Path

from operator_helpers import ROOT, Operator, Step, sh_blocks

from raftkv.testing.processes import wait_until

README = ROOT / "README.md"
MAKE_RUN = (
    "raftkv dev --base-port 8080 --peer-base-port 7080 --etcd-base-port 2379 --data-dir data/dev"
)


def test_the_readme_runs_in_order(tmp_path: Path) -> None:
    operator = Operator(tmp_path)
    try:
        quick_start = sh_blocks(README, "Quick start")
        assert [step.command for step in quick_start[0]] == ["make run", "make test"]
        operator.start(MAKE_RUN, "dev", '"ready"')
        for step in quick_start[1]:
            operator.run(step)

        server_blocks = sh_blocks(README, "The server and the CLI")
        # The first block is three machines; the second runs on this one.
        growing = server_blocks[1]
        assert growing[0].line.startswith("raftkv serve --id 4")
        operator.start(growing[0].line, "node-4", '"started": 4')

        def node_4_votes() -> bool:
            members = operator.get(8081, "/v1/cluster")["members"]
            return {member["id"]: member["role"] for member in members}.get(4) in (
                "voter",
                "leader",
            )

        wait_until(node_4_votes, 90, "node 4 to be promoted")
        for step in growing[1:]:
            operator.run(step)
        members = {member["id"] for member in operator.get(8081, "/v1/cluster")["members"]}
        assert members == {2, 3, 4}
        assert (tmp_path / "backup.raftkv").stat().st_size > 0

        # Users and roles, then auth on: alice writes app/ and nothing else.
        securing = server_blocks[2]
        assert securing[-1].line.startswith("raftkv put app/greeting hi --user alice")
        for step in securing:
            operator.run(step)
        refused = operator.run(
            Step("raftkv put other/x 1 --user alice:alice-password"), exit_codes=(3,)
        )
        assert "permission_denied" in refused.stderr

        # Ctrl-C, then `make run` again on the same data (issue 14 item 2): node 1 was
        # removed, so the Quick start's commands on 8080 could never work; dev says so and
        # how to start over instead of printing "ready".
        operator.stop("dev")
        again = operator.run(Step(MAKE_RUN), exit_codes=(1,))
        assert "ready" not in again.stdout
        # One line of its own (the nodes' shutdown logs follow it).
        (line,) = [line for line in again.stderr.splitlines() if line.startswith("raftkv dev:")]
        assert "node(s) 1 " in line and "delete data/dev and run it again" in line, line
    finally:
        operator.stop_all()
