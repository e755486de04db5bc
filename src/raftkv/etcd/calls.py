"""How a servicer answers one call: the service's errors become etcd's statuses, and every
call gets a deadline.

`@translated` wraps a unary method: an expected error it raises is translated by
`raftkv.etcd.errors.status_of` and ends the call with that status. Anything else is a bug:
logged with its traceback, and answered INTERNAL with one line naming it, so a client never
hangs on it. Streaming methods call `fail` themselves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
import grpc.aio

from raftkv.etcd.errors import status_of

logger = logging.getLogger("raftkv.etcd")

Context = grpc.aio.ServicerContext[object, object]
ServicerT = TypeVar("ServicerT")
RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


def translated(
    method: Callable[[ServicerT, RequestT, Context], Awaitable[ResultT]],
) -> Callable[[ServicerT, RequestT, Context], Awaitable[ResultT]]:
    @functools.wraps(method)
    async def call(servicer: ServicerT, request: RequestT, context: Context) -> ResultT:
        try:
            return await method(servicer, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await fail(context, error)

    return call


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """etcd's status for `error`; INTERNAL (logged with its traceback) for a bug."""
    status = status_of(error)
    if status is None:
        logger.error("etcd API: unexpected error", exc_info=error)
        return (
            grpc.StatusCode.INTERNAL,
            f"raftkv: internal error: {type(error).__name__}: {error}",
        )
    return status


async def fail(context: Context, error: Exception) -> NoReturn:
    """End the call with etcd's status for `error` (see the module docstring)."""
    code, message = status_for(error)
    await context.abort(code, message)


def deadline(context: Context, default_s: float) -> float:
    """Seconds the call may take: the client's deadline if it set one, capped at `default_s`
    (the server's request_timeout_s)."""
    # None without a deadline (the type stubs say float only).
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return default_s
    return max(min(remaining, default_s), 0.001)
