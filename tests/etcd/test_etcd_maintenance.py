"""etcd's Maintenance service against a real 3-node cluster (manual clock) through real
gRPC; Snapshot through a port given the server's backup source, as `raftkv serve` gives it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import pytest
from etcd_helpers import CLUSTER_ID, EtcdApi, etcd_cluster

from raftkv.etcd.context import EtcdContext
from raftkv.etcd.maintenance_servicer import VERSION, uint32_of
from raftkv.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.etcd.server import EtcdGrpcPort
from raftkv.etcd.servicers import EtcdServicers
from raftkv.kv import (
    KvCommand,
    KvService,
    KvStateMachine,
    NoSpaceAlarmResponse,
    RaiseNoSpaceAlarm,
    ReadLimits,
    encode_command,
)
from raftkv.kv.layout import CorruptAlarm
from raftkv.raft.core.types import NodeId
from raftkv.raft.storage.memory import MemoryAppData
from raftkv.server.backup import read_backup
from raftkv.server.backup_api import BackupHandlers
from raftkv.testing.local_cluster import run_scenario


async def _refused(api: EtcdApi, call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.cluster.complete(call)
    return raised.value


async def _put(api: EtcdApi, count: int) -> None:
    for index in range(count):
        await api.call(
            api.leader(), "KV", "Put", rpc_pb2.PutRequest(key=b"k%d" % index, value=b"v")
        )


def test_status_answers_version_leader_indexes_and_role() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _put(api, 3)
            node = api.follower()
            status = await api.call(node, "Maintenance", "Status", rpc_pb2.StatusRequest())
            known = api.services[node].status()
            assert status.header.cluster_id == CLUSTER_ID
            assert status.header.member_id == node
            assert status.version == VERSION
            assert status.version.startswith("3.5.0+raftkv.")
            assert status.leader == api.leader()
            assert status.raftTerm == known.term
            assert 0 < status.raftAppliedIndex <= status.raftIndex <= known.commit_index
            assert not status.isLearner
            assert list(status.errors) == []
            # The harness's storage is in memory: no files to count.
            assert status.dbSize == status.dbSizeInUse == 0

    run_scenario(scenario)


def test_status_of_a_learner_says_so() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            joiner = await api.cluster.add_joiner(NodeId(4))
            await api.cluster.complete(api.services[api.leader()].add_learner(NodeId(4), "node-4"))
            await api.cluster.run_until(lambda: NodeId(4) in joiner.status().learners)
            # A service and a port for the learner.
            machine = joiner.state_machine
            assert isinstance(machine, KvStateMachine)
            service = KvService(joiner, machine)
            context = EtcdContext(service, CLUSTER_ID)
            port = EtcdGrpcPort(EtcdServicers.of(context), "127.0.0.1:0")
            await port.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port.port}") as channel:
                    stub = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
                    status = await api.cluster.complete(stub.Status(rpc_pb2.StatusRequest()))
                    assert status.isLearner
            finally:
                await port.close()
                context.close()
                service.close()

    run_scenario(scenario)


def test_alarms_are_listed_in_status_and_alarm_get_and_stay_until_their_member_leaves() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.leader()
            empty = await api.call(node, "Maintenance", "Alarm", rpc_pb2.AlarmRequest())
            assert list(empty.alarms) == []
            assert empty.header.cluster_id == CLUSTER_ID
            # What a hash check that found member 3 in the minority leaves behind.
            alarm = CorruptAlarm(member_id=3, check_index=1, reason="minority")
            for service in api.services.values():
                service.corrupt_alarms = lambda: [alarm]  # type: ignore[method-assign]
            listed = await api.call(node, "Maintenance", "Alarm", rpc_pb2.AlarmRequest())
            assert [(a.memberID, a.alarm) for a in listed.alarms] == [(3, rpc_pb2.CORRUPT)]
            nospace = await api.call(
                node, "Maintenance", "Alarm", rpc_pb2.AlarmRequest(alarm=rpc_pb2.NOSPACE)
            )
            assert list(nospace.alarms) == []
            status = await api.call(node, "Maintenance", "Status", rpc_pb2.StatusRequest())
            assert list(status.errors) == ["memberID:3 alarm:CORRUPT "]
            stub = api.stubs(node).Maintenance
            deactivate = rpc_pb2.AlarmRequest.DEACTIVATE
            stays = await _refused(
                api,
                stub.Alarm(
                    rpc_pb2.AlarmRequest(action=deactivate, memberID=3, alarm=rpc_pb2.CORRUPT)
                ),
            )
            assert stays.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "cannot be deactivated" in stays.details()
            # Nothing raised for member 2: etcd answers no alarm.
            nothing = await api.call(
                node,
                "Maintenance",
                "Alarm",
                rpc_pb2.AlarmRequest(action=deactivate, memberID=2, alarm=rpc_pb2.NOSPACE),
            )
            assert list(nothing.alarms) == []
            activate = await _refused(
                api,
                stub.Alarm(
                    rpc_pb2.AlarmRequest(
                        action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE
                    )
                ),
            )
            assert activate.code() == grpc.StatusCode.FAILED_PRECONDITION
            for bad in (rpc_pb2.AlarmRequest(action=7), rpc_pb2.AlarmRequest(alarm=9)):
                unknown = await _refused(api, stub.Alarm(bad))
                assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT

    run_scenario(scenario)


def test_a_nospace_alarm_refuses_puts_with_etcds_error_and_deactivate_disarms_it() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            node = api.leader()
            service = api.services[node]
            # What member 2's space monitor proposes once its storage passes its quota.
            raised = await api.cluster.complete(
                service.node.propose(encode_command(KvCommand(RaiseNoSpaceAlarm(2, "quota"))))
            )
            assert isinstance(raised, NoSpaceAlarmResponse)
            listed = await api.call(node, "Maintenance", "Alarm", rpc_pb2.AlarmRequest())
            assert [(a.memberID, a.alarm) for a in listed.alarms] == [(2, rpc_pb2.NOSPACE)]
            only_corrupt = await api.call(
                node, "Maintenance", "Alarm", rpc_pb2.AlarmRequest(alarm=rpc_pb2.CORRUPT)
            )
            assert list(only_corrupt.alarms) == []
            status = await api.call(node, "Maintenance", "Status", rpc_pb2.StatusRequest())
            assert list(status.errors) == ["memberID:2 alarm:NOSPACE "]
            stub = api.stubs(node)
            for refused_call in (
                stub.KV.Put(rpc_pb2.PutRequest(key=b"k", value=b"v")),
                stub.Lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60)),
                stub.KV.Txn(
                    rpc_pb2.TxnRequest(
                        failure=[
                            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k", value=b""))
                        ]
                    )
                ),
            ):
                refused = await _refused(api, refused_call)
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert refused.details() == "etcdserver: mvcc: database space exceeded"
            deleted = await api.call(
                node, "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"k")
            )
            assert deleted.deleted == 0
            deactivated = await api.call(
                node,
                "Maintenance",
                "Alarm",
                rpc_pb2.AlarmRequest(
                    action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=2, alarm=rpc_pb2.NOSPACE
                ),
            )
            assert [(a.memberID, a.alarm) for a in deactivated.alarms] == [(2, rpc_pb2.NOSPACE)]
            assert service.nospace_alarms() == []
            await api.call(node, "KV", "Put", rpc_pb2.PutRequest(key=b"k", value=b"v"))

    run_scenario(scenario)


def test_hashes_agree_across_members_and_change_with_the_data() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _put(api, 5)
            leader = api.services[api.leader()]
            await api.cluster.run_until(
                lambda: all(
                    service.status().applied_index == leader.status().commit_index
                    for service in api.services.values()
                )
            )
            hashes = [
                await api.call(node, "Maintenance", "Hash", rpc_pb2.HashRequest())
                for node in api.services
            ]
            kv_hashes = [
                await api.call(node, "Maintenance", "HashKV", rpc_pb2.HashKVRequest())
                for node in api.services
            ]
            assert len({answer.hash for answer in hashes}) == 1
            assert len({answer.hash for answer in kv_hashes}) == 1
            assert {answer.header.revision for answer in kv_hashes} == {6}
            assert kv_hashes[0].hash == uint32_of((await leader.history_hash()).digest.hex())
            assert hashes[0].hash == uint32_of(await leader.state_hash())
            await _put(api, 1)
            again = await api.call(api.leader(), "Maintenance", "HashKV", rpc_pb2.HashKVRequest())
            assert again.hash != kv_hashes[0].hash

    run_scenario(scenario)


async def _applied_everywhere(api: EtcdApi) -> None:
    leader = api.services[api.leader()]
    await api.cluster.run_until(
        lambda: all(
            service.status().applied_index == leader.status().commit_index
            for service in api.services.values()
        )
    )


async def _hash_kv(api: EtcdApi, node: int, revision: int) -> rpc_pb2.HashKVResponse:
    request = rpc_pb2.HashKVRequest(revision=revision)
    answer: rpc_pb2.HashKVResponse = await api.call(node, "Maintenance", "HashKV", request)
    return answer


def test_hash_kv_at_a_past_revision_agrees_across_members_and_holds_after_more_writes() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _put(api, 4)  # revisions 2..5
            await api.call(api.leader(), "KV", "Compact", rpc_pb2.CompactionRequest(revision=3))
            await _applied_everywhere(api)
            at_4 = [await _hash_kv(api, node, 4) for node in api.services]
            assert len({answer.hash for answer in at_4}) == 1
            assert {answer.compact_revision for answer in at_4} == {3}
            # The header carries the current revision, as etcd's.
            assert {answer.header.revision for answer in at_4} == {5}
            at_5 = await _hash_kv(api, api.follower(), 5)
            assert at_5.hash != at_4[0].hash
            # 0: the current revision, hashed the same way.
            assert (await _hash_kv(api, api.leader(), 0)).hash == at_5.hash
            # At the compacted revision itself: allowed, as in etcd.
            await _hash_kv(api, api.leader(), 3)
            await _put(api, 3)
            await api.call(api.leader(), "KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"k0"))
            await _applied_everywhere(api)
            for node in api.services:
                assert (await _hash_kv(api, node, 4)).hash == at_4[0].hash
                assert (await _hash_kv(api, node, 5)).hash == at_5.hash
            latest = [await _hash_kv(api, node, 0) for node in api.services]
            assert len({answer.hash for answer in latest}) == 1
            assert latest[0].header.revision == 9
            assert latest[0].hash not in (at_4[0].hash, at_5.hash)

    run_scenario(scenario)


def test_hash_kv_refuses_future_and_compacted_revisions_with_etcds_errors() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _put(api, 4)
            node = api.leader()
            # Never compacted: -1, as etcd answers.
            assert (await _hash_kv(api, node, 0)).compact_revision == -1
            await api.call(node, "KV", "Compact", rpc_pb2.CompactionRequest(revision=3))
            stub = api.stubs(node).Maintenance
            future = await _refused(api, stub.HashKV(rpc_pb2.HashKVRequest(revision=99)))
            assert future.code() == grpc.StatusCode.OUT_OF_RANGE
            assert future.details() == "etcdserver: mvcc: required revision is a future revision"
            compacted = await _refused(api, stub.HashKV(rpc_pb2.HashKVRequest(revision=2)))
            assert compacted.code() == grpc.StatusCode.OUT_OF_RANGE
            assert compacted.details() == "etcdserver: mvcc: required revision has been compacted"
            answer = await _hash_kv(api, node, 0)
            assert answer.compact_revision == 3

    run_scenario(scenario)


def test_hash_kv_past_the_nodes_scan_limit_is_resource_exhausted() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            await _put(api, 4)  # 4 history entries
            node = api.leader()
            api.services[node].read_limits = ReadLimits(max_scan_entries=3)
            stub = api.stubs(node).Maintenance
            refused = await _refused(api, stub.HashKV(rpc_pb2.HashKVRequest(revision=2)))
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_scan_entries=3" in refused.details()
            api.services[node].read_limits = ReadLimits(max_scan_entries=4)
            await _hash_kv(api, node, 2)

    run_scenario(scenario)


def test_move_leader_hands_over_on_the_leader_and_refuses_elsewhere() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            leader, follower = api.leader(), api.follower()
            stub = api.stubs(follower).Maintenance
            elsewhere = await _refused(
                api, stub.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=follower))
            )
            assert elsewhere.code() == grpc.StatusCode.UNAVAILABLE
            assert elsewhere.details() == "etcdserver: not leader"
            for bad_target in (0, 99):
                bad = await _refused(
                    api,
                    api.stubs(leader).Maintenance.MoveLeader(
                        rpc_pb2.MoveLeaderRequest(targetID=bad_target)
                    ),
                )
                assert bad.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert bad.details() == "etcdserver: bad leader transferee"
            # To itself: done at once.
            await api.call(
                leader, "Maintenance", "MoveLeader", rpc_pb2.MoveLeaderRequest(targetID=leader)
            )
            assert api.leader() == leader
            moved = await api.call(
                leader, "Maintenance", "MoveLeader", rpc_pb2.MoveLeaderRequest(targetID=follower)
            )
            assert moved.header.cluster_id == CLUSTER_ID
            await api.cluster.run_until(lambda: api.cluster.leader() is not None)
            assert api.leader() == follower

    run_scenario(scenario)


def test_defragment_answers_success() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            answer = await api.call(
                api.follower(), "Maintenance", "Defragment", rpc_pb2.DefragmentRequest()
            )
            assert answer.header.cluster_id == CLUSTER_ID

    run_scenario(scenario)


def test_snapshot_without_a_backup_source_is_unimplemented() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            stream = api.stubs(api.leader()).Maintenance.Snapshot(rpc_pb2.SnapshotRequest())
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await api.cluster.complete(stream.read())
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED

    run_scenario(scenario)


@asynccontextmanager
async def _snapshot_port(api: EtcdApi, node: int) -> AsyncIterator[Any]:
    """A port on `node` given the server's backup source; yields its Maintenance stub."""
    service = api.services[node]
    # The server's backups, as raftkv serve hands them to etcd's Snapshot.
    backups = BackupHandlers(service, timeout=5.0, max_concurrent_backups=1)
    context = EtcdContext(service, CLUSTER_ID, backup=backups.backup_file)
    port = EtcdGrpcPort(EtcdServicers.of(context), "127.0.0.1:0")
    await port.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port.port}") as channel:
            yield rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await port.close()
        context.close()


def test_snapshot_streams_a_raftkv_backup_that_restores_to_the_same_state() -> None:
    async def scenario() -> None:
        async with etcd_cluster() as api:
            # Values that do not compress: the backup takes several messages.
            noise = random.Random(0)
            for index in range(50):
                await api.call(
                    api.leader(),
                    "KV",
                    "Put",
                    rpc_pb2.PutRequest(key=b"key-%d" % index, value=noise.randbytes(8000)),
                )
            node = api.follower()
            async with _snapshot_port(api, node) as stub:

                async def read_all() -> list[Any]:
                    return [answer async for answer in stub.Snapshot(rpc_pb2.SnapshotRequest())]

                answers = await api.cluster.complete(read_all())
            data = b"".join(answer.blob for answer in answers)
            assert len(answers) > 1
            assert [answer.remaining_bytes for answer in answers] == [
                len(data) - sum(len(a.blob) for a in answers[: position + 1])
                for position in range(len(answers))
            ]
            assert answers[-1].remaining_bytes == 0
            assert answers[0].header.member_id == node
            header, payload = read_backup(data)
            assert (header.revision, header.node_id) == (51, node)
            copy = KvStateMachine(MemoryAppData())
            copy.restore(payload, header.index, header.term)
            assert copy.state_hash() == api.services[node].machine.state_hash()

    run_scenario(scenario)
