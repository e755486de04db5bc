"""How a servicer answers one call: the service's errors become etcd's statuses, and every
call gets a deadline.

`@translated` wraps a unary method: an expected error it raises is translated by
`raftkv.etcd.errors.status_of` and ends the call with that status. Anything else is a bug:
logged with its traceback, and answered INTERNAL with one line naming it, so a client never
hangs on it. Each call is counted and timed in its servicer's `context.stats`. Streaming
methods call `fail` themselves.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol, TypeVar

import grpc
import grpc.aio

from raftkv.etcd.call_stats import CallStats
from raftkv.etcd.errors import status_of

logger = logging.getLogger("raftkv.etcd")

Context = grpc.aio.ServicerContext[object, object]


class _HasStats(Protocol):
    @property
    def stats(self) -> CallStats: ...


class _Servicer(Protocol):
    @property
    def context(self) -> _HasStats: ...


ServicerT = TypeVar("ServicerT", bound=_Servicer)
RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


def translated(
    method: Callable[[ServicerT, RequestT, Context], Awaitable[ResultT]],
) -> Callable[[ServicerT, RequestT, Context], Awaitable[ResultT]]:
    name = method.__name__

    @functools.wraps(method)
    async def call(servicer: ServicerT, request: RequestT, context: Context) -> ResultT:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(servicer, request, context)
        except grpc.aio.AbortError:
            # The method ended the call itself, with the code it set.
            code = _code_of(context)
            raise
        except Exception as error:
            code, message = status_for(error)
            await context.abort(code, message)
        finally:
            servicer.context.stats.observe(name, code.name, time.perf_counter() - started)

    return call


def _code_of(context: Context) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


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
