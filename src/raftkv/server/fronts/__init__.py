"""Front processes (`http_workers`): the client port's HTTP work on other cores.

- `supervisor`: the node's side: the port served by N fronts (`FrontedClientPort`), which
  it starts, restarts and stops, and its own app on a private Unix socket for what they
  forward.
- `front`: one front process: the KV routes served through calls to the node, every other
  route forwarded to the node's app.
- `protocol`: the frames between them; `gateway`: the node's end of the calls, run as its
  app runs a request; `remote_service`: the front's end, `RemoteKvService`.

docs/operations.md#front-processes says how to use them; docs/performance.md what they
give.
"""
