"""Whether the checked-in modules generated from .proto files are current: what
`make proto`'s command would write now, compared byte for byte with what is checked in
(the tests of the peer protocol's and etcd's generated code both ask)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# What protoc writes for each foo.proto (`make proto`'s --python_out, --pyi_out and
# --grpc_python_out).
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def out_of_date(source: Path, protos: Sequence[Path], scratch: Path) -> list[str]:
    """The generated modules beside `protos` (under the import root `source`) that differ
    from what protoc generates from them now, into `scratch`. AssertionError with protoc's
    own message if it fails."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{source}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *map(str, protos),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stale = []
    for proto in protos:
        for suffix in GENERATED_SUFFIXES:
            checked_in = proto.with_name(proto.stem + suffix)
            regenerated = scratch / checked_in.relative_to(source)
            if regenerated.read_bytes() != checked_in.read_bytes():
                stale.append(checked_in.name)
    return stale
