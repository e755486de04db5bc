"""Catch-up progress for `raftkv status`: a bar per member whose log lags the leader's (a
joining learner being caught up, a follower back from downtime), from the leader's view of
the cluster (`/v1/cluster`: match index and lag per member).

`raftkv status` prints the bars once when a member lags (`render`); `raftkv status --wait
SECONDS` shows them until every member has caught up (exit 0) or the time is up (exit 4,
saying what is still behind): redrawn in place on a terminal, a line per change otherwise.
A member the leader has never heard from is named, with its peer address to check.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.client import ClientError, Cluster, Member, SyncClient

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "Lagging",
    "lagging",
    "never_contacted",
    "progress_line",
    "render",
    "wait_caught_up",
]

# How often `--wait` asks the leader again.
POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Lagging:
    id: int
    role: str
    # Entries the member holds, and the leader's last index (match_index + lag).
    match_index: int
    last_index: int

    @property
    def fraction(self) -> float:
        return self.match_index / self.last_index if self.last_index else 1.0


def lagging(cluster: Cluster) -> list[Lagging] | None:
    """Members behind the leader's log; None if the answer is not the leader's (only the
    leader knows match indexes)."""
    if any(member.lag is None for member in cluster.members):
        return None
    return [
        Lagging(
            member.id,
            member.role,
            member.match_index or 0,
            (member.match_index or 0) + (member.lag or 0),
        )
        for member in cluster.members
        if member.lag
    ]


def render(behind: list[Lagging]) -> Table:
    """A rich table with a progress bar per lagging member."""
    from rich.progress_bar import ProgressBar  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title="catching up", title_justify="left")
    for column in ("id", "role", "progress", "entries", "behind"):
        table.add_column(column)
    for member in behind:
        table.add_row(
            Text(str(member.id)),
            Text(member.role),
            ProgressBar(total=member.last_index or 1, completed=member.match_index, width=30),
            Text(f"{member.match_index}/{member.last_index} ({member.fraction:.0%})"),
            Text(str(member.last_index - member.match_index)),
        )
    return table


def never_contacted(cluster: Cluster) -> list[Member]:
    """Members the leader has never heard from (no contact, nothing matched): a member not
    running, or whose peer address the leader cannot reach. Empty unless `cluster` is the
    leader's view."""
    if cluster.id != cluster.leader:
        return []
    return [
        member
        for member in cluster.members
        if member.id != cluster.leader and member.last_contact_s is None and not member.match_index
    ]


def progress_line(cluster: Cluster, behind: list[Lagging]) -> str:
    """The catch-up as one line: each lagging member's progress, and who never made
    contact (with what to check)."""
    silent = {member.id: member for member in never_contacted(cluster)}
    parts = [
        f"member {member.id} ({member.role}) {member.match_index}/{member.last_index} "
        f"({member.fraction:.0%})"
        for member in behind
        if member.id not in silent
    ]
    parts += [
        f"member {member.id} has never made contact with the leader: is it running, and "
        f"can the leader reach its peer address {member.peer_url}?"
        for member in silent.values()
    ]
    return "; ".join(parts)


def wait_caught_up(
    client: SyncClient,
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Show the catch-up until no member lags (None) or `seconds` pass (then the last
    progress line, saying what is still behind). On a terminal the bars are redrawn in
    place; otherwise each change of progress is printed as one line."""
    from rich.console import Console, Group  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = Console(file=sys.stdout, highlight=False)
    deadline = clock() + seconds
    shown = ""

    live = Live(console=console, transient=False) if console.is_terminal else None

    def show(line: str, bars: Table | None = None) -> None:
        nonlocal shown
        if live is not None:
            live.update(Text(line) if bars is None else Group(bars, Text(line)))
        elif line != shown:
            console.print(Text(line))
        shown = line

    with live if live is not None else contextlib.nullcontext():
        show(f"waiting up to {seconds:g}s for every member to catch up: asking the leader")
        while True:
            try:
                cluster = client.cluster()
            except ClientError as error:
                show(f"no answer from the cluster ({error.code}); asking again")
            else:
                behind = lagging(cluster)
                if behind == []:
                    show("every member is caught up")
                    return None
                if behind is None:
                    show(
                        f"the leader could not be asked (member {cluster.id} answered, "
                        f"leader {cluster.leader or 'unknown'}); asking again"
                    )
                else:
                    show(progress_line(cluster, behind), render(behind))
            if clock() >= deadline:
                return shown
            sleep(POLL_S)
