"""The HTTP/JSON API's wire schema: every request body and every answer, as msgspec structs.

One source for three users: the server (`raftkv.server`) decodes requests and encodes
answers with them, `raftkv.server.openapi` derives `/openapi.json` from them and from the
server's route table (so the document cannot drift from the server), and the client
(`raftkv.client`) encodes requests and decodes answers with them. It sits beside both, not
in either: the client imports nothing of the server, and this package imports msgspec only,
so a client loads none of the server's dependencies.

One concept per module:
- `keys`: keys and values on the wire, key ranges (`prefix_end`), the answers' `Header`;
- `kv`: put, get, delete, range, txn, compact;
- `leases`: grant, keep-alive, revoke, lease status;
- `watches`: the messages of a watch stream;
- `cluster`: health, readiness, status, members, membership and leadership changes;
- `errors`: the body of every refusal.

Request structs (`...Body`) forbid unknown fields; answer structs (`...Answer`, the watch
messages) accept them (a newer server may add fields without breaking an older client).
"""
