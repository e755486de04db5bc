"""Runs every interaction script in tests/core/testdata (etcd-io/raft's testdata style).

Each script drives a fresh `InteractionEnv`; see `raftkv.testing.scripts.interaction` for the
commands. To regenerate the expected outputs after a deliberate change, run
`pytest tests/core/test_interaction.py --rewrite` and read the diff before keeping it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.raft.core import Entry
from raftkv.testing.scripts.datadriven import DataDrivenError, parse, run_file
from raftkv.testing.scripts.interaction import InteractionEnv, SafetyViolation

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 25


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_interaction(script: Path, datadriven_rewrite: bool) -> None:
    env = InteractionEnv()
    run_file(script, env.handle, rewrite=datadriven_rewrite)


def run_commands(env: InteractionEnv, text: str) -> list[str]:
    """Run the commands of `text` (a script without expected outputs) and return outputs."""
    return [env.handle(case) for case in parse(text).cases]


def test_unknown_commands_and_arguments_are_script_errors() -> None:
    env = InteractionEnv()
    with pytest.raises(DataDrivenError, match=r"<string>:1: .*unknown command 'bogus'"):
        run_commands(env, "bogus 1\n----\n")
    with pytest.raises(DataDrivenError, match="unknown arguments: prevot"):
        run_commands(env, "add-nodes 3 voters=(1,2,3) prevot=true\n----\n")
    with pytest.raises(DataDrivenError, match="no node 1"):
        run_commands(env, "campaign 1\n----\n")


def test_raft_errors_are_printed_not_raised() -> None:
    env = InteractionEnv()
    outputs = run_commands(env, "add-nodes 1 voters=(1)\n----\n\npropose 1 foo\n----\n")
    assert outputs == ["ok\n", "error: ProposalDropped: no leader\n"]


def test_a_node_applying_a_different_entry_at_an_index_is_a_safety_violation() -> None:
    env = InteractionEnv()
    run_commands(
        env,
        "log-level none\n----\n\nadd-nodes 3 voters=(1,2,3)\n----\n\n"
        "campaign 1\n----\n\nstabilize\n----\n\npropose 1 foo\n----\n\n"
        "process-ready 1\n----\n\ndeliver-msgs 2 3\n----\n\nprocess-ready 2 3\n----\n\n"
        "deliver-msgs 1\n----\n\nprocess-ready 1\n----\n",
    )
    applied = env.applied_entries[3]
    assert applied.data == b"foo"
    # Pretend some node applied something else at index 3 before.
    env.applied_entries[3] = Entry(term=applied.term, index=3, data=b"bar")
    with pytest.raises(SafetyViolation, match='applies 2/3 EntryNormal "foo" at 3'):
        run_commands(env, "stabilize\n----\n")
