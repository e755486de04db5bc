"""check_state_machine on the shipped state machines, and on broken ones it must catch."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from raftkv.raft.driver.state_machine import Command
from raftkv.raft.storage.base import RaftStorage
from raftkv.testing import DictStateMachine, DurableDictStateMachine
from raftkv.testing.conformance.state_machine import (
    StateMachineCheckFailed,
    check_state_machine,
)
from raftkv.testing.state_machines import encode_delete, encode_incr, encode_set

COMMANDS = [
    encode_set("a", "1"),
    encode_incr("n", 5),
    encode_delete("a"),
    encode_set("b", "2"),
    encode_incr("n"),
]


def test_the_in_memory_dict_keeps_the_promises() -> None:
    check_state_machine(lambda _: DictStateMachine(), COMMANDS)


def test_the_durable_dict_keeps_the_promises() -> None:
    check_state_machine(
        lambda storage: DurableDictStateMachine(storage.app_data()), COMMANDS, durable=True
    )


class Nondeterministic(DictStateMachine):
    def apply(
        self, commands: Sequence[Command], applied_index: int, applied_term: int
    ) -> list[object]:
        results = super().apply(commands, applied_index, applied_term)
        self.data["noise"] = str(random.random())
        return results


class ForgetsItsIndexOnRestore(DictStateMachine):
    def restore(self, data: bytes, index: int, term: int) -> None:
        super().restore(data, 0, term)


def test_a_nondeterministic_state_machine_is_caught() -> None:
    with pytest.raises(StateMachineCheckFailed, match="not deterministic"):
        check_state_machine(lambda _: Nondeterministic(), COMMANDS)


def test_a_restore_that_loses_the_index_is_caught() -> None:
    with pytest.raises(StateMachineCheckFailed, match="after restore"):
        check_state_machine(lambda _: ForgetsItsIndexOnRestore(), COMMANDS)


def test_claiming_durability_without_it_is_caught() -> None:
    def in_memory(_: RaftStorage) -> DictStateMachine:
        return DictStateMachine()

    with pytest.raises(StateMachineCheckFailed, match="resumes at 0"):
        check_state_machine(in_memory, COMMANDS, durable=True)
