"""Running a client verb: a `SyncClient` from the common flags, the verb, and every way it
can fail mapped to its exit code (the table in `raftkv.cli`):

- a bad --endpoints value or a `UsageError` (bad input, output that cannot show the data):
  EXIT_USAGE (2);
- a refusal by the server (a 4xx answer, `Refused`): EXIT_REFUSED (3);
- any other `ClientError` (no endpoint answered, 503/504 after every retry, an unknown
  outcome, a server error): EXIT_UNAVAILABLE (4). When no endpoint could serve the call
  (`Unavailable`) the line also says where the endpoints came from and how to name others
  (--endpoints, $RAFTKV_ENDPOINTS).

Each prints one line on stderr (`raftkv.cli.errors.fail`), never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from raftkv.cli import EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from raftkv.cli.arguments import client_settings_of, endpoints_hint, endpoints_of
from raftkv.cli.errors import UsageError, fail
from raftkv.cli.output import Output
from raftkv.client import ClientError, Refused, SyncClient, Unavailable

__all__ = ["Verb", "run_verb"]

# A client verb: the call and its output; returns the exit code.
Verb = Callable[[SyncClient, argparse.Namespace, Output], int]


def run_verb(verb: Verb) -> Callable[[argparse.Namespace], int]:
    """The subcommand handler (`parser.set_defaults(handler=run_verb(verb))`) that runs
    `verb` with a client of the common flags' endpoints and timeout."""

    def handler(arguments: argparse.Namespace) -> int:
        output = Output(as_json=arguments.output == "json", in_base64=arguments.base64)
        try:
            client = SyncClient(endpoints_of(arguments), client_settings_of(arguments))
        except UsageError as error:
            return fail(EXIT_USAGE, error.code, error.message)
        except ValueError as error:
            return fail(EXIT_USAGE, "usage", str(error))
        with client:
            try:
                return verb(client, arguments, output)
            except UsageError as error:
                return fail(EXIT_USAGE, error.code, error.message)
            except Refused as error:
                return fail(EXIT_REFUSED, error.code, error.message)
            except Unavailable as error:
                message = f"{error.message}; {endpoints_hint(arguments)}"
                return fail(EXIT_UNAVAILABLE, error.code, message)
            except ClientError as error:
                return fail(EXIT_UNAVAILABLE, error.code, error.message)

    return handler
