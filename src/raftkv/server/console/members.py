"""Any member shows the whole cluster: `gather_members` asks every other member for
`GET /v1/console/node` at its client URL, all at once, each within a timeout, and reports
one that cannot answer (down, no URL published yet, an error answer, an older raftkv
without the route) as unreachable with the reason: one member down never fails the answer
nor holds it longer than the timeout.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import aiohttp
import msgspec

from raftkv.api.console import ConsoleMember, ConsoleNodeAnswer

__all__ = ["NODE_PATH", "gather_members"]

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
