"""Where a single-connection PUT's time goes: timestamps along the write path of a real
3-process cluster, per stage, on the leader and on the first follower to acknowledge.

    .venv/bin/python tools/write_path_trace.py [--puts 1500] [--client-port 25080]
        [--peer-transport tcp|grpc]

Starts three `raftkv serve` processes on 127.0.0.1 (clients on PORT..PORT+2, peers on
PORT+100..PORT+102) with the write path instrumented (wrapping a handful of driver and
transport methods: no change to the code under test), sends PUTs of 256-byte values to
the leader one at a time, stops the processes (SIGTERM, by PID) and prints the median and
mean microseconds of each stage over all but the first 200 PUTs. Timestamps are
time.perf_counter_ns(), CLOCK_MONOTONIC on Linux, so they compare across the processes.
The instrumentation costs a few microseconds per event; the stages are what to compare,
the total is a little above an uninstrumented run's. docs/performance.md shows a run.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

Event = tuple[int, str, int]  # (perf_counter_ns, stage, log index)
WARMUP_PUTS = 200


# -- inside each traced server -------------------------------------------------------------


def serve_traced(output: str, arguments: list[str]) -> None:
    """Run `raftkv serve ARGUMENTS` recording events; write them to `output` at exit."""
    import atexit  # noqa: PLC0415

    from raftkv.cli import run  # noqa: PLC0415
    from raftkv.raft.core.types import MessageType  # noqa: PLC0415
    from raftkv.raft.driver import applying, node, requests, writer  # noqa: PLC0415
    from raftkv.raft.transport import (  # noqa: PLC0415
        grpc_sender,
        grpc_servicer,
        grpc_transport,
        tcp_sender,
        tcp_server,
        tcp_transport,
    )

    now = time.perf_counter_ns
    events: list[Event] = []
    atexit.register(lambda: Path(output).write_text(json.dumps(events)))
    append, append_response = MessageType.APPEND, MessageType.APPEND_RESPONSE

    def wrap(owner: Any, name: str, make: Any) -> None:
        setattr(owner, name, make(getattr(owner, name)))

    def decode_frame(original: Any) -> Any:
        def traced(frame: bytes, cluster_id: Any) -> Any:
            received = now()
            decoded = original(frame, cluster_id)
            for message in decoded[2]:
                if message.type is append and message.entries:
                    events.append((received, "recv_append", message.entries[-1].index))
                elif message.type is append_response:
                    events.append((received, f"recv_ack_{message.sender}", message.index))
            return decoded

        return traced

    def start_ready(original: Any) -> Any:
        def traced(self: Any, rawnode: Any) -> None:
            started = now()
            original(self, rawnode)
            outstanding = self._outstanding
            if outstanding is None:
                return
            ready = outstanding.ready
            if ready.entries:
                events.append((started, "ready_entries", ready.entries[-1].index))
                events.append((now(), "entries_submitted", ready.entries[-1].index))
            if ready.committed_entries:
                events.append((started, "ready_committed", ready.committed_entries[-1].index))

        return traced

    def finish_ready(original: Any) -> Any:
        def traced(self: Any, rawnode: Any, outstanding: Any) -> None:
            ready = outstanding.ready
            started = now()
            original(self, rawnode, outstanding)
            if ready.entries:
                events.append((started, "finish_entries", ready.entries[-1].index))
            if ready.committed_entries:
                index = ready.committed_entries[-1].index
                events.append((started, "finish_committed", index))
                events.append((now(), "finish_committed_end", index))

        return traced

    def submit(original: Any) -> Any:
        def traced(self: Any, function: Any, *arguments: Any, **keywords: Any) -> Any:
            entries = arguments[1] if len(arguments) > 1 else ()
            index = entries[-1].index if entries else -1

            def timed(*inner: Any, **inner_keywords: Any) -> Any:
                events.append((now(), "write_start", index))
                result = function(*inner, **inner_keywords)
                events.append((now(), "write_end", index))
                return result

            return original(self, timed, *arguments, **keywords)

        return traced

    def apply_entries(original: Any) -> Any:
        def traced(self: Any, rawnode: Any, entries: Any) -> None:
            events.append((now(), "apply_start", entries[-1].index))
            original(self, rawnode, entries)
            events.append((now(), "apply_end", entries[-1].index))

        return traced

    def send(original: Any) -> Any:
        def traced(self: Any, messages: Any) -> None:
            for message in messages:
                if message.type is append and message.entries:
                    events.append((now(), "send_append", message.entries[-1].index))
                elif message.type is append_response:
                    events.append((now(), "send_ack", message.index))
            original(self, messages)

        return traced

    # The messages of the frames taken since the last frame write began.
    taken: list[Any] = []

    def take_frame(original: Any) -> Any:
        def traced(queue: Any, max_messages: int, max_bytes: int) -> Any:
            frame = original(queue, max_messages, max_bytes)
            taken.extend(frame)
            return frame

        return traced

    def record_frames(started: int, ended: int) -> None:
        for message in taken:
            if message.type is append and message.entries:
                name, index = "append", message.entries[-1].index
            elif message.type is append_response:
                name, index = "ack", message.index
            else:
                continue
            events.append((started, f"frame_{name}_start", index))
            events.append((ended, f"frame_{name}_end", index))
        taken.clear()

    def send_frame(original: Any) -> Any:  # gRPC: the sender task writes a frame
        async def traced(self: Any) -> Any:
            taken.clear()
            started = now()
            failure = await original(self)
            record_frames(started, now())
            return failure

        return traced

    def flush(original: Any) -> Any:  # TCP: send writes the frames into the socket
        def traced(self: Any) -> None:
            taken.clear()
            started = now()
            original(self)
            record_frames(started, now())

        return traced

    def propose(original: Any) -> Any:
        async def traced(self: Any, command: bytes, *, timeout: float | None = None) -> Any:
            called = now()
            result = await original(self, command, timeout=timeout)
            events.append((called, "propose_call", -1))
            events.append((now(), "propose_return", -1))
            return result

        return traced

    wrap(grpc_servicer, "decode_frame", decode_frame)
    wrap(tcp_server, "decode_frame", decode_frame)
    wrap(node.Node, "_start_ready", start_ready)
    wrap(node.Node, "_finish_ready", finish_ready)
    wrap(node.Node, "propose", propose)
    wrap(writer.Writer, "submit", submit)
    wrap(applying.Applier, "apply_entries", apply_entries)
    wrap(grpc_transport.GrpcTransport, "send", send)
    wrap(tcp_transport.TcpTransport, "send", send)
    wrap(grpc_sender, "take_frame", take_frame)
    wrap(tcp_sender, "take_frame", take_frame)
    wrap(grpc_sender.GrpcPeerSender, "_send_frame", send_frame)
    wrap(tcp_sender.TcpPeerSender, "flush", flush)
    del requests  # imported so every module the wrappers touch is loaded alike
    sys.argv = ["raftkv", "serve", *arguments]
    run()


# -- the driver: start, load, stop, report ---------------------------------------------------


def run_cluster(
    puts: int, client_port: int, directory: Path, peer_transport: str
) -> tuple[int, list[list[int]]]:
    peers = ",".join(f"{i}=127.0.0.1:{client_port + 99 + i}" for i in (1, 2, 3))
    processes = []
    try:
        for i in (1, 2, 3):
            command = [
                sys.executable, __file__, "_serve", str(directory / f"n{i}.json"), "--",
                "--id", str(i), "--data-dir", str(directory / f"data-{i}"),
                "--listen-client", f"127.0.0.1:{client_port + i - 1}",
                "--advertise-client-url", f"http://127.0.0.1:{client_port + i - 1}",
                "--listen-peer", f"127.0.0.1:{client_port + 99 + i}",
                "--initial-cluster", peers, "--log-level", "warning",
                "--peer-transport", peer_transport,
            ]  # fmt: skip
            log = (directory / f"n{i}.log").open("w")
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        leader = wait_for_leader(client_port)
        client = put_sequentially(client_port + leader - 1, puts)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return leader, client


def wait_for_leader(client_port: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/v1/cluster") as answer:
                leader = int(json.load(answer)["leader"])
            if leader:
                return leader
        except OSError:
            pass
        time.sleep(0.2)  # polling a starting process, not waiting on Raft's clock
    raise SystemExit("the cluster elected no leader in 30 s")


def put_sequentially(port: int, puts: int) -> list[list[int]]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"value": "x" * 256})
    times = []
    for number in range(puts):
        sent = time.perf_counter_ns()
        connection.request(
            "PUT",
            f"/v1/kv/trace/{number}",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"PUT answered {answer.status}")
        times.append([sent, time.perf_counter_ns()])
    connection.close()
    return times


def stages(directory: Path, leader: int, client: list[list[int]]) -> dict[str, list[int]]:
    def firsts(node: int) -> dict[tuple[str, int], int]:
        seen: dict[tuple[str, int], int] = {}
        for at, name, index in json.loads((directory / f"n{node}.json").read_text()):
            seen.setdefault((name, index), at)
        return seen

    lead = firsts(leader)
    followers = {node: firsts(node) for node in (1, 2, 3) if node != leader}
    raw = json.loads((directory / f"n{leader}.json").read_text())
    calls = sorted((at, name) for at, name, _ in raw if name in ("propose_call", "propose_return"))
    call_times = [at for at, name in calls if name == "propose_call"]
    return_times = [at for at, name in calls if name == "propose_return"]
    ready_times = sorted((at, index) for at, name, index in raw if name == "ready_entries")
    result: dict[str, list[int]] = defaultdict(list)
    for sent, answered in client[WARMUP_PUTS:]:
        position = bisect.bisect_left(call_times, sent)
        if position >= len(call_times) or call_times[position] > answered:
            continue
        called = call_times[position]
        returned = return_times[bisect.bisect_left(return_times, called)]
        ready = bisect.bisect_left(ready_times, (called, 0))
        if ready >= len(ready_times):
            continue
        index = ready_times[ready][1]
        try:
            row = _row(
                lead=lead,
                followers=followers,
                index=index,
                sent=sent,
                called=called,
                returned=returned,
                answered=answered,
            )
        except KeyError:
            continue  # a PUT that shared its Ready with another request: not this path
        for name, value in row.items():
            result[name].append(value)
    return result


def _row(
    *,
    lead: dict[tuple[str, int], int],
    followers: dict[int, dict[tuple[str, int], int]],
    index: int,
    sent: int,
    called: int,
    returned: int,
    answered: int,
) -> dict[str, int]:
    def at(name: str, events: dict[tuple[str, int], int] = lead) -> int:
        return events[(name, index)]

    first, acker = min(
        ((at(f"recv_ack_{node}"), node) for node in followers), key=lambda item: item[0]
    )
    follower = followers[acker]
    return {
        "leader: HTTP request read and decoded, until propose": called - sent,
        "leader: propose -> Ready with the entry": at("ready_entries") - called,
        "leader: Ready -> MsgApp handed to transport": at("send_append") - at("ready_entries"),
        "leader: transport.send -> the frame write begins": (
            at("frame_append_start") - at("send_append")
        ),
        "leader: the frame write (gRPC: awaited; TCP: into the socket)": (
            at("frame_append_end") - at("frame_append_start")
        ),
        "leader: write thread picks up the entry": at("write_start") - at("entries_submitted"),
        "leader: persist entry (RocksDB write + fsync)": at("write_end") - at("write_start"),
        "leader: write done -> loop finishes the Ready": at("finish_entries") - at("write_end"),
        "hop: leader frame write -> follower decodes it": (
            at("recv_append", follower) - at("frame_append_start")
        ),
        "follower: decoded -> Ready with the entry": (
            at("ready_entries", follower) - at("recv_append", follower)
        ),
        "follower: write thread picks up the entry": (
            at("write_start", follower) - at("entries_submitted", follower)
        ),
        "follower: persist entry (RocksDB write + fsync)": (
            at("write_end", follower) - at("write_start", follower)
        ),
        "follower: write done -> loop finishes the Ready": (
            at("finish_entries", follower) - at("write_end", follower)
        ),
        "follower: Ready finished -> the ack's frame write begins": (
            at("frame_ack_start", follower) - at("finish_entries", follower)
        ),
        "hop: follower frame write -> leader decodes the ack": (
            first - at("frame_ack_start", follower)
        ),
        "leader: MsgApp sent -> first ack decoded (round trip)": first - at("send_append"),
        "leader: ack decoded -> Ready committing the entry": at("ready_committed") - first,
        "leader: commit Ready -> its write done (commit index)": (
            at("finish_committed") - at("ready_committed")
        ),
        "leader: apply (KV state machine, RocksDB write)": at("apply_end") - at("apply_start"),
        "leader: Ready finished -> propose returns": returned - at("finish_committed_end"),
        "leader: propose returned -> client has the answer": answered - returned,
        "total, as the client sees it": answered - sent,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_serve":  # one traced server (internal)
        serve_traced(sys.argv[2], sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=1500, help="sequential PUTs (default 1500)")
    parser.add_argument(
        "--client-port",
        type=int,
        default=25080,
        help="first client port; peers on +100 (default 25080)",
    )
    parser.add_argument(
        "--peer-transport", choices=("tcp", "grpc"), default="tcp", help="(default tcp)"
    )
    arguments = parser.parse_args()
    if arguments.puts <= WARMUP_PUTS:
        parser.error(f"--puts must be above the {WARMUP_PUTS} warm-up PUTs")
    with tempfile.TemporaryDirectory(prefix="raftkv-write-trace-") as name:
        directory = Path(name)
        leader, client = run_cluster(
            arguments.puts, arguments.client_port, directory, arguments.peer_transport
        )
        result = stages(directory, leader, client)
    measured = len(result["total, as the client sees it"])
    print(
        f"{measured} of {arguments.puts - WARMUP_PUTS} PUTs traced over "
        f"{arguments.peer_transport}; leader node {leader}"
    )
    print("| stage | median µs | mean µs |\n|---|---|---|")
    for name, values in result.items():
        median, mean = statistics.median(values) / 1000, statistics.mean(values) / 1000
        print(f"| {name} | {median:.0f} | {mean:.0f} |")


if __name__ == "__main__":
    main()
