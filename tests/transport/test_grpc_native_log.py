"""gRPC's C core reports a failed TLS handshake on a peer port itself, on descriptor 2 and
in its own format; under `raftkv serve` that line is a log record in `log_format` like any
other (issue 14 item 14). A subprocess serves TLS with gRPC, receives plaintext garbage,
and prints nothing that is not a JSON log line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from raftkv.testing.certificates import CertificateAuthority
from raftkv.testing.processes import free_port

CHILD = """
import socket, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import grpc
from raftkv.server.logs import configure_logging
from raftkv.server.native_stderr import NativeStderr

native = NativeStderr()
configure_logging("info", "json", 1, native=native)
ca, cert, key, port = sys.argv[1:5]
credentials = grpc.ssl_server_credentials(
    [(Path(key).read_bytes(), Path(cert).read_bytes())],
    root_certificates=Path(ca).read_bytes(),
    require_client_auth=True,
)
server = grpc.server(ThreadPoolExecutor(1))
server.add_secure_port(f"127.0.0.1:{port}", credentials)
server.start()
with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as plain:
    plain.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    while plain.recv(4096):  # the server closes the connection once the handshake fails
        pass
server.stop(0).wait(10)
native.stop()
"""


def test_a_failed_tls_handshake_is_a_json_log_line(tmp_path: Path) -> None:
    tls = CertificateAuthority(tmp_path, "peers").issue("node-1")
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(tls.ca_file),
            str(tls.cert_file),
            str(tls.key_file),
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    documents = [json.loads(line) for line in done.stderr.splitlines()]
    handshakes = [d for d in documents if "Handshake failed" in d["message"]]
    assert handshakes, done.stderr
    assert all(d["logger"] == "grpc" and d["node"] == 1 for d in handshakes)
