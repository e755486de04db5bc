"""Break the Raft core on purpose and check that the tests notice.

For each mutation: copy `src/` to a temporary directory, apply one textual change to a core
file (each pattern must match exactly once, so a refactor cannot silently turn a mutation
into a no-op), then run the interaction scripts + paper/unit tests and a simulator sweep
against the mutant. A mutation is *caught* if any check fails.

    python tools/mutate.py [--seeds 0:300] [--only NAME ...]

Exit code 0 if every mutation was caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    story: str
    path: str  # relative to src/raftkv/raft/core
    old: str
    new: str


MUTATIONS = [
    Mutation(
        "commit-old-term-by-counting",
        "a leader commits an entry of an earlier term by counting replicas (Raft §5.4.2)",
        "log.py",
        "if index > self.committed and self.term_or_zero(index) == term:",
        "if index > self.committed:",
    ),
    Mutation(
        "vote-not-persisted",
        "the vote is never written to the hard state, so a restarted node may vote twice",
        "raft.py",
        "return HardState(term=self.term, vote=self.vote, commit=self.log.committed)",
        "return HardState(term=self.term, vote=NO_NODE, commit=self.log.committed)",
    ),
    Mutation(
        "vote-ignores-log",
        "a voter grants its vote without the up-to-date check (Raft §5.4.1)",
        "raft.py",
        "if can_vote and self.log.is_up_to_date(message.index, message.log_term):",
        "if can_vote:",
    ),
    Mutation(
        "commit-on-any-ack",
        "the commit index is the highest acknowledged index, not a majority's",
        "quorum.py",
        "return indexes[len(indexes) // 2]",
        "return indexes[0]",
    ),
    Mutation(
        "append-skips-consistency-check",
        "a follower appends without checking the previous entry's term (Raft §5.3)",
        "log.py",
        "        if not self.match_term(index, log_term):\n            return None\n"
        "        last_new = index + len(entries)",
        "        last_new = index + len(entries)",
    ),
    Mutation(
        "read-index-without-quorum",
        "a safe ReadIndex is answered at once, without confirming leadership (thesis §6.4)",
        "read_index.py",
        "        self.read_only.add_request(node.log.committed, message)\n"
        "        self.read_only.receive_ack(node.id, context)\n"
        "        self._broadcast_heartbeat(context)",
        "        self._answer(message, node.log.committed)\n        del context",
    ),
    Mutation(
        "leader-counts-unpersisted-log",
        "the leader counts its own entries toward commitment before they are durable",
        "raft.py",
        "        new_last = self.log.append(stamped)\n",
        "        new_last = self.log.append(stamped)\n"
        "        self.tracker.progress[self.id].maybe_update(new_last)\n",
    ),
    # The bugs the simulator found while the core was written, put back one at a time.
    Mutation(
        "full-window-never-reprobed",
        "a heartbeat response does not unpause a follower whose inflight window was lost",
        "raft.py",
        "                progress.recent_active = True\n"
        "                progress.flow_paused = False\n",
        "                progress.recent_active = True\n",
    ),
    Mutation(
        "removed-leader-steps-down-at-once",
        "a leader that removed itself steps down before the others know the change committed",
        "raft.py",
        "            self.step_down_after_commit = self.log.committed\n",
        "            self.become_follower(self.term, NO_NODE)\n",
    ),
    Mutation(
        "no-commit-learning-from-vote-refusals",
        "a candidate ignores the commit index a refusing voter reports",
        "raft.py",
        "                if message.type in _VOTE_RESPONSE_TYPES and message.reject:\n"
        "                    self._learn_commit(message)\n",
        "",
    ),
    Mutation(
        "lease-from-any-quorum-contact",
        "a lease read is served whenever CheckQuorum last saw a quorum, not from send times",
        "read_index.py",
        "        if self.lease_based and self.lease_holds():",
        "        if self.lease_based:",
    ),
]


def apply_mutation(source_root: Path, mutation: Mutation) -> None:
    path = source_root / "raftkv" / "raft" / "core" / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.name}: pattern found {count} times in {mutation.path}")
    path.write_text(text.replace(mutation.old, mutation.new))


def run_check(name: str, command: list[str], source_root: Path) -> tuple[bool, str]:
    environment = dict(os.environ, PYTHONPATH=str(source_root), RAFTKV_MUTANT="1")
    completed = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    output = (completed.stdout + completed.stderr).strip().splitlines()
    tail = output[-1] if output else ""
    return completed.returncode != 0, f"{name}: exit {completed.returncode} ({tail[:160]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:300", help="simulator seed range A:B")
    parser.add_argument("--only", nargs="*", default=None, help="mutation names to run")
    arguments = parser.parse_args()
    python = sys.executable
    checks = [
        (
            "tests",
            [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/core"],
        ),
        (
            "sim",
            [python, "-m", "raftkv.testing.sim", "--seeds", arguments.seeds, "--swarm"],
        ),
    ]
    selected = [m for m in MUTATIONS if arguments.only is None or m.name in arguments.only]
    missed = []
    for mutation in selected:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="raftkv-mutant-") as directory:
            source_root = Path(directory) / "src"
            shutil.copytree(ROOT / "src", source_root)
            apply_mutation(source_root, mutation)
            results = [run_check(name, command, source_root) for name, command in checks]
        caught = any(failed for failed, _ in results)
        verdict = "CAUGHT" if caught else "MISSED"
        print(f"{verdict:6} {mutation.name} — {mutation.story}")
        for failed, summary in results:
            print(f"         {'fail' if failed else 'pass'} {summary}")
        print(f"         ({time.monotonic() - started:.0f} s)")
        if not caught:
            missed.append(mutation.name)
    print(f"{len(selected) - len(missed)}/{len(selected)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
