"""`python -m raftkv`: the same entry point as the `raftkv` command."""

from raftkv.cli import run

run()
