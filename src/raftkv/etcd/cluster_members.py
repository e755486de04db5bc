"""How raftkv's members look as etcd's `Member`s, and the checks on the peer URLs a
client gives: the translation half of the Cluster service (`cluster_servicer`).

A member as etcd shows it:
- ID: raftkv's member id, unchanged (etcd draws random 64-bit ones; clients only compare).
- name: "node-<id>" once the member has published its client URL (it has started and
  serves), else "" — etcd's name is empty until the member starts too, and etcdctl then
  prints the member "unstarted".
- peerURLs: the member's one peer address. raftkv stores host:port (its own peer protocol,
  not etcd's); shown as "http://host:port" unless it was given with a scheme.
- clientURLs: the URL of the member's etcd gRPC API, as it published it through the log
  beside its HTTP one (empty for a member that does not serve etcd's API): what etcd's
  clients can use, so clientv3's auto-sync finds the right endpoints.
- isLearner: whether the member is a learner.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import grpc

from raftkv.etcd.errors import MEMBER_BAD_URLS, EtcdError
from raftkv.etcd.proto import rpc_pb2
from raftkv.raft.driver.status import NodeStatus

MEMBER_EXISTS = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXISTS = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
ONE_PEER_URL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    "etcdserver: given member URLs are invalid: a raftkv member has exactly one peer URL",
)

# The longest peer address raftkv accepts (the HTTP API's limit too).
MAX_PEER_ADDRESS: Final = 255
_SCHEMES: Final = frozenset({"http", "https"})


def members_of(
    status: NodeStatus, client_urls: dict[int, str], etcd_urls: dict[int, str]
) -> list[rpc_pb2.Member]:
    """Every member `status` knows, by id. A node that knows it was removed is not one of
    them, whatever its log says (as in the HTTP API's /v1/cluster)."""
    ids = {*status.voters, *status.learners} - ({status.id} if status.removed else set())
    members = []
    for member in sorted(ids):
        client_url = client_urls.get(int(member), "")
        etcd_url = etcd_urls.get(int(member), "")
        address = status.peers.get(member, "")
        members.append(
            rpc_pb2.Member(
                ID=int(member),
                name=f"node-{int(member)}" if client_url else "",
                peerURLs=[peer_url_of(address)] if address else [],
                clientURLs=[etcd_url] if etcd_url else [],
                isLearner=member in status.learners,
            )
        )
    return members


def peer_url_of(address: str) -> str:
    """A stored peer address as the URL etcd's clients expect."""
    return address if "://" in address else f"http://{address}"


def peer_address(urls: list[str]) -> str:
    """The host:port raftkv stores for the peer URLs of an add or update: exactly one URL,
    http(s)://host:port with no path (etcd's check), else etcd's "given member URLs are
    invalid"."""
    if len(urls) != 1:
        raise EtcdError(ONE_PEER_URL if urls else MEMBER_BAD_URLS)
    (url,) = urls
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EtcdError(MEMBER_BAD_URLS) from None
    if (
        parts.scheme not in _SCHEMES
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or len(parts.netloc) > MAX_PEER_ADDRESS
    ):
        raise EtcdError(MEMBER_BAD_URLS)
    return parts.netloc
