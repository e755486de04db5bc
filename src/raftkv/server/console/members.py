"""Any member shows the whole cluster: `gather_members` asks every other member for
`GET /v1/console/node` at its client URL, all at once, each within a timeout, and reports
one that cannot answer (down, no URL published yet, an error answer, an older raftkv
without the route) as unreachable with the reason: one member down never fails the answer
nor holds it longer than the timeout.

`SharedGathering` bounds what pages cost the cluster: however many pages refresh at once,
one gathering at a time runs, and its answer serves every request within `fresh_s` of it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import msgspec

from raftkv.api.console import ConsoleMember, ConsoleNodeAnswer

__all__ = ["NODE_PATH", "SharedGathering", "gather_members"]

NODE_PATH = "/v1/console/node"
# The most of a member's answer read (a status is well under 4 KiB).
_MAX_ANSWER_BYTES = 1 << 16
_DECODER = msgspec.json.Decoder(ConsoleNodeAnswer)


async def _ask(
    session: aiohttp.ClientSession, member: int, url: str, timeout_s: float
) -> ConsoleMember:
    if not url:
        return ConsoleMember(member, url, False, "it has not published a client URL")
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(f"{url}{NODE_PATH}", allow_redirects=False) as response:
                body = await response.content.read(_MAX_ANSWER_BYTES)
                if response.status != 200:
                    return ConsoleMember(member, url, False, f"HTTP {response.status}")
        return ConsoleMember(member, url, True, node=_DECODER.decode(body))
    except aiohttp.ClientConnectorError as error:
        reason = error.os_error
        cause = os.strerror(reason.errno) if reason.errno else str(reason)
        return ConsoleMember(member, url, False, f"cannot connect: {cause}")
    except TimeoutError:
        return ConsoleMember(member, url, False, f"no answer within {timeout_s:g} s")
    except aiohttp.ClientError as error:
        return ConsoleMember(member, url, False, str(error) or type(error).__name__)
    except msgspec.DecodeError as error:
        return ConsoleMember(member, url, False, f"unreadable answer: {error}")


async def gather_members(
    session: aiohttp.ClientSession,
    client_urls: Mapping[int, str],
    me: int,
    mine: ConsoleNodeAnswer,
    timeout_s: float,
) -> list[ConsoleMember]:
    """Every member of `client_urls` (id -> client URL, "" when not published), in id
    order: `me` with `mine` as it is, the others as they answer through `session`."""
    others = sorted(member for member in client_urls if member != me)
    answers = await asyncio.gather(
        *(_ask(session, member, client_urls[member], timeout_s) for member in others)
    )
    found = {answer.id: answer for answer in answers}
    if me in client_urls:
        found[me] = ConsoleMember(me, client_urls[me], True, node=mine)
    return [found[member] for member in sorted(found)]


class SharedGathering:
    """One gathering shared by every request (see the module docstring).

    Invariant: at most one `gather()` runs at a time; `_finished_at` is when the last one
    that completed did (on `now`'s clock), None before."""

    def __init__(
        self,
        gather: Callable[[], Awaitable[list[ConsoleMember]]],
        now: Callable[[], float],
        fresh_s: float,
    ) -> None:
        self._gather = gather
        self._now = now
        self.fresh_s = fresh_s
        self._task: asyncio.Task[list[ConsoleMember]] | None = None
        self._finished_at: float | None = None
        # Gatherings started, for tests and curiosity.
        self.started = 0

    async def _run(self) -> list[ConsoleMember]:
        try:
            return await self._gather()
        finally:
            self._finished_at = self._now()

    def _current(self) -> asyncio.Task[list[ConsoleMember]]:
        task = self._task
        if task is not None and not task.done():
            return task  # running: wait for it
        if (
            task is not None
            and not task.cancelled()
            and task.exception() is None
            and self._finished_at is not None
            and self._now() - self._finished_at < self.fresh_s
        ):
            return task  # fresh enough
        self.started += 1
        self._task = asyncio.create_task(self._run(), name="raftkv-console-gather")
        return self._task

    async def members(self) -> list[ConsoleMember]:
        """The members, from a gathering running or finished within `fresh_s` if any, else
        from a new one. A request that goes away does not cancel it for the others."""
        return await asyncio.shield(self._current())

    async def close(self) -> None:
        """Cancel a gathering still running (the app is stopping)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
