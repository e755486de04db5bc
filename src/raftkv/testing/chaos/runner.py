"""One chaos run: a real cluster in the lab, the workload against it, faults from a seeded
schedule, then healing, convergence and the checks (`verify.py`).

The schedule alternates a fault and a calm spell. At most one fault is active at a time,
so a majority of the members is always up and connected (the cluster must stay available,
and the run checks that it made progress); before each fault the cluster must have a
leader again (a bounded wait). The faults:

| name       | what it does                                                              |
| ---------- | ------------------------------------------------------------------------- |
| kill       | SIGKILL a member (the leader half the time), restart it after the hold    |
| pause      | SIGSTOP a member, SIGCONT after the hold                                  |
| partition  | cut a member off from the others, or two members from each other (the    |
|            | third still sees both), healed after the hold                             |
| disk       | fill a member's disk: it fails its next write and exits 1; freed and      |
|            | restarted after the hold                                                  |
| membership | remove a member (the leader a third of the time), add a new one with a    |
|            | new id that joins and is promoted                                         |
| transfer   | move leadership to another member                                         |

Which fault, which member and how long come from `random.Random(seed)`, drawn the same way
whatever happens: a seed names a schedule. What the cluster does in it (who leads when a
fault asks for the leader, which requests meet which fault) depends on timing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from raftkv.testing.chaos.cluster import ChaosCluster, ChaosError, wait_for
from raftkv.testing.chaos.lab import NetworkLab, check_can_run
from raftkv.testing.chaos.verify import Verdict, read_history, verify
from raftkv.testing.chaos.workload import Claim, Kind, Record, Workload, WorkloadSettings

FAULTS = ("kill", "pause", "partition", "disk", "membership", "transfer")

# Settings every node runs with: history kept whole (the checks read it from revision 1),
# short requests (so a request to a paused node ends as unknown rather than blocking),
# plaintext on the lab's private network, and no free-space reserve: the disk fault fills
# a node's disk to test the crash path (a node that fails its write exits, and no answer
# is misreported); with the reserve, the node would raise a NOSPACE alarm first and the
# rest of the run would be read-only (that path has its own tests:
# tests/kv/test_kv_space_monitor.py, tests/e2e/test_e2e_nospace.py).
NODE_SETTINGS = [
    "--auto-compaction-retention",
    "0",
    "--request-timeout-s",
    "2",
    "--corrupt-check-interval-s",
    "5",
    "--min-free-disk-bytes",
    "0",
    # The lab's bridge is a private network of network namespaces: plaintext peers there
    # are the operator's stated choice (raftkv.server.exposure).
    "--allow-insecure-peers",
    "true",
    "--allow-insecure-clients",
    "true",
]


@dataclass(frozen=True)
class ChaosSettings:
    seed: int = 0
    duration_s: float = 60.0
    nodes: int = 3
    workload: WorkloadSettings = field(default_factory=WorkloadSettings)
    # The faults to draw from; with `in_order`, each once in this order instead.
    faults: tuple[str, ...] = FAULTS
    in_order: bool = False
    hold_s: tuple[float, float] = (0.5, 4.0)
    calm_s: tuple[float, float] = (0.5, 2.0)
    # Where the run's files go (node logs, report.json); a temporary directory if None.
    directory: Path | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}: choose among {list(FAULTS)}")
        if not 3 <= self.nodes <= 9 or self.nodes % 2 == 0:
            raise ValueError("nodes must be odd, 3 to 9")


@dataclass
class ChaosReport:
    seed: int
    verdict: Verdict
    faults: list[str] = field(default_factory=list)
    claims: dict[str, int] = field(default_factory=dict)
    longest_write_gap_s: float = 0.0
    directory: str = ""

    def lines(self) -> list[str]:
        status = "PASS" if self.verdict.ok else "FAIL"
        out = [
            f"chaos seed {self.seed}: {status}",
            f"  faults: {', '.join(self.faults) or 'none'}",
            "  requests: "
            + ", ".join(f"{name} {count}" for name, count in sorted(self.claims.items())),
            f"  operations checked for linearizability: {self.verdict.operations_checked}",
            f"  longest time without an acknowledged write: {self.longest_write_gap_s:.2f}s",
        ]
        out.extend(f"  {problem}" for problem in self.verdict.problems)
        if self.directory:
            out.append(f"  files: {self.directory}")
        return out


class _Run:
    def __init__(self, settings: ChaosSettings, root: Path) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.lab = NetworkLab()
        self.cluster = ChaosCluster(self.lab, root, settings=NODE_SETTINGS)
        self.faults: list[str] = []
        # Exits the run caused on purpose (a full disk), per node.
        self.expected_exits: Counter[int] = Counter()

    def members(self) -> list[int]:
        return sorted(self.cluster.members)

    def hold(self) -> float:
        low, high = self.settings.hold_s
        return self.rng.uniform(low, high)

    def target(self) -> int:
        # Both draws always happen, so the rng's sequence does not depend on timing.
        wants_leader = self.rng.random() < 0.5
        anyone = self.rng.choice(self.members())
        leader = self.cluster.leader() if wants_leader else None
        return leader if leader is not None else anyone

    # -- faults ---------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        cluster = self.cluster
        match fault:
            case "kill":
                node = self.target()
                cluster.kill(node)
                time.sleep(self.hold())
                cluster.restart(node)
                self.faults.append(f"kill {node}")
            case "pause":
                node = self.target()
                cluster.pause(node)
                time.sleep(self.hold())
                cluster.resume(node)
                self.faults.append(f"pause {node}")
            case "partition":
                members = self.members()
                node = self.target()
                others = [other for other in members if other != node]
                if self.rng.random() < 0.5:
                    for other in others:
                        self.lab.cut(node, other)
                    described = f"partition {node} | {others}"
                else:
                    first, second = self.rng.sample(others, 2)
                    self.lab.cut(first, second)
                    described = f"partition {first} | {second}"
                time.sleep(self.hold())
                self.lab.heal()
                self.faults.append(described)
            case "disk":
                node = self.target()
                disk = cluster.nodes[node].disk
                disk.fill()
                deadline = time.monotonic() + self.hold() + 10.0
                while cluster.nodes[node].running and time.monotonic() < deadline:
                    time.sleep(0.1)
                failed = not cluster.nodes[node].running
                disk.free()
                if failed:
                    self.expected_exits[node] += 1
                    cluster.restart(node)
                self.faults.append(f"disk {node}" + (" (failed, restarted)" if failed else ""))
            case "membership":
                self.replace_member()
            case "transfer":
                leader = cluster.wait_for_leader()
                to = self.rng.choice([node for node in self.members() if node != leader])
                cluster.http.post(
                    f"{cluster.url(leader)}/v1/leader/transfer", json={"to": to}, timeout=10.0
                )
                self.faults.append(f"transfer {leader} -> {to}")

    def replace_member(self) -> None:
        cluster = self.cluster
        leader = cluster.wait_for_leader()
        members = self.members()
        victim = leader if self.rng.random() < 1 / 3 else self.rng.choice(members)
        via = self.rng.choice([node for node in members if node != victim])
        response = cluster.http.delete(f"{cluster.url(via)}/v1/members/{victim}", timeout=20.0)
        if response.status_code != 200:
            self.faults.append(f"remove {victim} refused ({response.status_code})")
            return
        cluster.members.discard(victim)
        wait_for(lambda: victim not in cluster.voters(via), 30, f"node {victim} to be removed")
        cluster.kill(victim)
        added = cluster.add(via)
        wait_for(lambda: added in cluster.voters(via), 90, f"node {added} to join as a voter")
        self.faults.append(f"replace {victim} by {added}")

    # -- phases ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Heal everything, bring every member up, wait until they agree on a leader."""
        self.lab.heal()
        for node in self.members():
            self.cluster.resume(node)
            if not self.cluster.nodes[node].running:
                self.cluster.restart(node)
        self.cluster.wait_for_leader(timeout=60)

    def converge(self) -> dict[int, dict[str, object] | None]:
        """Wait until every member applied the same index; their statuses, with hashes."""
        statuses: dict[int, dict[str, object] | None] = {}

        def converged() -> bool:
            statuses.clear()
            for node in self.members():
                answer = self.cluster.get(node, "/v1/status?hash=true", timeout=10.0)
                statuses[node] = answer[1] if answer is not None and answer[0] == 200 else None
            applied = {
                status.get("applied_index") if status else None for status in statuses.values()
            }
            return len(applied) == 1 and None not in applied

        with contextlib.suppress(ChaosError):  # verify() reports what differs
            wait_for(converged, 60, "every member to apply the same index")
        return dict(statuses)


def longest_write_gap(records: list[Record], started: float, ended: float) -> float:
    """The longest time between `started` and `ended` in which no write was acknowledged."""
    times = sorted(
        record.return_time
        for record in records
        if record.claim is Claim.APPLIED and record.kind is not Kind.GET
    )
    points = [started, *times, ended]
    return max(later - earlier for earlier, later in itertools.pairwise(points))


def run_chaos(settings: ChaosSettings) -> ChaosReport:
    """One chaos run (see the module docstring). Raises ChaosError/LabError if the lab or
    the cluster could not be set up; problems found are in the report's verdict."""
    reason = check_can_run()
    if reason:
        raise ChaosError(reason)
    root = settings.directory or Path(tempfile.mkdtemp(prefix="raftkv-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    run = _Run(settings, root)
    workload: Workload | None = None
    # The run's files stay when asked for, when a problem was found, or when the run broke
    # off (an exception): the report names the directory.
    keep = True
    try:
        run.lab.open()
        run.cluster.create(settings.nodes)
        run.cluster.wait_for_leader(timeout=60)
        workload = Workload(settings.workload, run.members, run.cluster.url, settings.seed)
        started = time.monotonic()
        workload.start()
        schedule = list(settings.faults)
        deadline = started + settings.duration_s
        while time.monotonic() < deadline and (schedule or not settings.in_order):
            fault = schedule.pop(0) if settings.in_order else run.rng.choice(schedule)
            run.cluster.wait_for_leader(timeout=60)
            run.inject(fault)
            time.sleep(run.rng.uniform(*settings.calm_s))
        run.recover()
        workload.stop()
        ended = time.monotonic()
        statuses = run.converge()
        leader = run.cluster.wait_for_leader(timeout=60)
        leader_status = statuses.get(leader)
        if leader_status is None:
            raise ChaosError(f"the leader {leader} did not answer /v1/status at the end")
        history = read_history(run.cluster.url(leader), int(str(leader_status["revision"])))
        unexplained: dict[int, list[int]] = {}
        for node, chaos_node in run.cluster.nodes.items():
            codes = list(chaos_node.exits)
            for _ in range(run.expected_exits[node]):
                if 1 in codes:
                    codes.remove(1)
            unexplained[node] = codes
        verdict = verify(
            workload.records,
            history,
            logs=run.cluster.logs(),
            unexplained_exits=unexplained,
            final_statuses=statuses,
        )
        report = ChaosReport(
            seed=settings.seed,
            verdict=verdict,
            faults=run.faults,
            claims=dict(Counter(record.claim.value for record in workload.records)),
            longest_write_gap_s=longest_write_gap(workload.records, started, ended),
            directory=str(root) if settings.keep or not verdict.ok else "",
        )
        (root / "report.json").write_text(
            json.dumps({"lines": report.lines(), "problems": verdict.problems}, indent=1)
        )
        keep = settings.keep or settings.directory is not None or not verdict.ok
        return report
    finally:
        if workload is not None:
            workload.stop()
        run.cluster.close()
        run.lab.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
