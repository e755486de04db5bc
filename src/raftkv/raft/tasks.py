"""Ending the asyncio tasks a component started: `cancel_and_wait`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task (None: skipped), then wait until each has ended. A task's own
    cancellation is what was asked for and is not raised; any other exception a task ended
    with is, as awaiting it would."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
