"""The same etcdctl command at raftkv and at a real etcd, and what each printed compared.

Two stores that took the same writes print the same thing except for what names the
store: cluster and member ids and the raft term (placeholders here), and revisions, which
each store counts from its own past (earlier tests, a leader change). A `Differential`
therefore takes each store's revision when a test begins (`begin`) and compares revisions
relative to it; a command that names a revision gives it as `Rev(offset)`, made concrete
per store, and a value each store names differently (a lease id) as `Each(...)`; what the
stores print differently on purpose (ids, member counts) is masked by the `masks` a
command is run with. stderr is compared by etcdctl's `Error: ...` lines (the client library's JSON
log lines name pointers and times), and the exit codes must be equal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkv.testing.etcd_tools import Etcdctl, EtcdctlResult

# Header fields that name the store, not the data.
STORE_FIELDS = {"cluster_id", "member_id", "raft_term"}
REVISION_FIELDS = {"revision", "create_revision", "mod_revision", "compact_revision"}
FIELDS_STORE = re.compile(r'^"(ClusterID|MemberID|RaftTerm)" : \d+$', re.MULTILINE)
FIELDS_REVISION = re.compile(r'^("(?:Revision|CreateRevision|ModRevision)" : )(\d+)$', re.MULTILINE)
COMPACTED_TO = re.compile(r"^compacted revision (\d+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Rev:
    """A revision `offset` after the store's revision when the test began, written after
    `prefix` (e.g. Rev(2, "--rev="))."""

    offset: int
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Each:
    """An argument each store is given its own value of (e.g. its lease id in hex)."""

    values: dict[str, str] = field(default_factory=dict)


# (pattern, replacement) pairs applied to stdout and the error lines before comparing.
Masks = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Seen:
    """What one store's etcdctl printed, normalized."""

    returncode: int
    stdout: Any
    errors: tuple[str, ...]


def _relative_json(value: Any, base: int) -> Any:
    if isinstance(value, dict):
        return {
            key: "<store>"
            if key in STORE_FIELDS
            else item - base
            if key in REVISION_FIELDS and isinstance(item, int) and item > 0
            else _relative_json(item, base)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_relative_json(item, base) for item in value]
    return value


def masked(text: str, masks: Masks) -> str:
    for pattern, replacement in masks:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def normalize_json_lines(text: str, base: int) -> list[Any]:
    """Output of one JSON document a line (`watch -w=json`), revisions relative to
    `base` and what names the store replaced."""
    return [_relative_json(json.loads(line), base) for line in text.splitlines() if line]


def normalize(result: EtcdctlResult, base: int, masks: Masks = ()) -> Seen:
    stdout: Any = masked(result.stdout, masks)
    if result.returncode == 0 and ("-w=json" in result.args or "--write-out=json" in result.args):
        # The JSON is the last line (txn -i prints its prompts before it).
        *prompts, document = stdout.splitlines()
        stdout = (prompts, _relative_json(json.loads(document), base))
    else:
        stdout = FIELDS_STORE.sub(r'"\1" : <store>', stdout)
        stdout = FIELDS_REVISION.sub(lambda m: f"{m[1]}{int(m[2]) - base}", stdout)
        stdout = COMPACTED_TO.sub(lambda m: f"compacted revision {int(m[1]) - base}", stdout)
    errors = tuple(masked(line, masks) for line in result.errors)
    return Seen(result.returncode, stdout, errors)


class Differential:
    """etcdctl at raftkv and at etcd, run side by side."""

    def __init__(self, raftkv: Etcdctl, etcd: Etcdctl) -> None:
        self.stores = {"raftkv": raftkv, "etcd": etcd}
        self.base = {"raftkv": 0, "etcd": 0}

    def revision(self, store: str) -> int:
        header = self.stores[store].run("get", "-w=json", "none").check().json()["header"]
        revision: int = header["revision"]
        return revision

    def begin(self) -> None:
        """Take each store's revision now as the origin of the revisions compared."""
        self.base = {store: self.revision(store) for store in self.stores}

    def concrete(self, store: str, args: Sequence[str | Rev | Each]) -> list[str]:
        """`args` as given to `store`'s etcdctl."""
        return [
            f"{arg.prefix}{self.base[store] + arg.offset}"
            if isinstance(arg, Rev)
            else arg.values[store]
            if isinstance(arg, Each)
            else arg
            for arg in args
        ]

    def run_each(self, *args: str | Rev | Each, stdin: str = "") -> dict[str, EtcdctlResult]:
        """Run at both without comparing: each store's result."""
        return {
            store: etcdctl.run(*self.concrete(store, args), stdin=stdin)
            for store, etcdctl in self.stores.items()
        }

    def run(self, *args: str | Rev | Each, stdin: str = "", masks: Masks = ()) -> EtcdctlResult:
        """Run at both, assert both printed the same (normalized, `masks` applied);
        raftkv's result."""
        results = self.run_each(*args, stdin=stdin)
        seen = {
            store: normalize(result, self.base[store], masks) for store, result in results.items()
        }
        assert seen["raftkv"] == seen["etcd"], (
            f"etcdctl {' '.join(map(str, args))}: raftkv and etcd differ\n"
            f"raftkv: {results['raftkv']}\netcd:   {results['etcd']}"
        )
        return results["raftkv"]
