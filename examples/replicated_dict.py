"""A replicated dict on RocksDB: a durable state machine and membership changes.

Start three founding members (each in its own terminal):

    CLUSTER=1=127.0.0.1:7201,2=127.0.0.1:7202,3=127.0.0.1:7203
    .venv/bin/python examples/replicated_dict.py --id 1 --cluster $CLUSTER
    .venv/bin/python examples/replicated_dict.py --id 2 --cluster $CLUSTER
    .venv/bin/python examples/replicated_dict.py --id 3 --cluster $CLUSTER

and later a fourth that joins through any member (learner first, promoted once caught up):

    .venv/bin/python examples/replicated_dict.py --id 4 --cluster 4=127.0.0.1:7204 \
        --join 127.0.0.1:7201

Commands on stdin, one per line; each answer is one JSON line on stdout:

    set KEY VALUE | get KEY | del KEY | incr KEY [BY] | items
    status | add-learner ID ADDRESS | promote ID | remove ID | transfer [ID]

A line may start with `@TAG `; the answer then carries {"tag": TAG}, and commands run
concurrently (the integration tests drive it this way).

The dict lives in RocksDB beside the Raft log; the applied index is written in the same
atomic batch as the data, so a restart (even after `kill -9`) resumes exactly where the
node stopped: nothing is applied twice or skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from raftkv.raft import NodeBuilder, NodeId, NodeSettings, RaftError
from raftkv.testing.state_machines import (
    DurableDictStateMachine,
    encode_delete,
    encode_incr,
    encode_set,
)


def parse_cluster(text: str) -> dict[int, str]:
    members = {}
    for item in text.split(","):
        node_id, _, address = item.partition("=")
        members[int(node_id)] = address
    return members


async def run_command(node: Any, words: list[str]) -> object:
    match words:
        case ["set", key, value]:
            return await node.propose(encode_set(key, value))
        case ["get", key]:
            return await node.linearizable_read(lambda machine: machine.get(key))
        case ["del", key]:
            return await node.propose(encode_delete(key))
        case ["incr", key]:
            return await node.propose(encode_incr(key))
        case ["incr", key, by]:
            return await node.propose(encode_incr(key, int(by)))
        case ["items"]:
            return await node.linearizable_read(lambda machine: machine.items())
        case ["status"]:
            status = node.status()
            return {
                "id": status.id,
                "role": status.role.value,
                "term": status.term,
                "leader": status.leader_id,
                "commit": status.commit_index,
                "applied": status.applied_index,
                "voters": list(status.voters),
                "learners": list(status.learners),
            }
        case ["add-learner", node_id, address]:
            conf_state = await node.add_learner(NodeId(int(node_id)), address)
            return sorted(conf_state.learners)
        case ["promote", node_id]:
            return sorted((await node.promote(NodeId(int(node_id)))).voters)
        case ["remove", node_id]:
            return sorted((await node.remove_member(NodeId(int(node_id)))).voters)
        case ["transfer"]:
            return await node.transfer_leadership()
        case ["transfer", node_id]:
            return await node.transfer_leadership(NodeId(int(node_id)))
    raise ValueError(f"unknown command: {' '.join(words)}")


async def answer(node: Any, line: str) -> None:
    tag = None
    if line.startswith("@"):
        tag, _, line = line.partition(" ")
        tag = tag[1:]
    reply: dict[str, object] = {} if tag is None else {"tag": tag}
    try:
        reply["result"] = await run_command(node, line.split())
        reply["ok"] = True
    except (RaftError, TimeoutError, ValueError) as error:
        reply["ok"] = False
        reply["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(reply), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description="A replicated dict on raftkv + RocksDB")
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--cluster", required=True, help="id=host:port,... (founders, or self)")
    parser.add_argument("--join", default=None, help="a member's address, to join its cluster")
    parser.add_argument("--data-dir", default=None, help="default: data/dict/<id>")
    parser.add_argument("--tick-ms", type=int, default=100)
    arguments = parser.parse_args()

    builder = (
        NodeBuilder(arguments.id)
        .peers(parse_cluster(arguments.cluster))
        .data_dir(arguments.data_dir or f"data/dict/{arguments.id}")
        .settings(NodeSettings(tick_interval_s=arguments.tick_ms / 1000))
        .state_machine(lambda storage: DurableDictStateMachine(storage.app_data()))
    )
    if arguments.join:
        node = await builder.join([arguments.join])
    else:
        node = await builder.bootstrap()
    print(json.dumps({"started": arguments.id}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending: set[asyncio.Task[None]] = set()
    try:
        while line := (await reader.readline()).decode():
            if line.strip() == "quit":
                break
            if line.strip():
                task = asyncio.create_task(answer(node, line.strip()))
                pending.add(task)
                task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
    finally:
        await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
