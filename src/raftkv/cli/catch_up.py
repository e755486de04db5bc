"""Catch-up progress for `raftkv status`: a bar per member whose log lags the leader's (a
joining learner being caught up, a follower back from downtime), from the leader's view of
the cluster (`/v1/cluster`: match index and lag per member).

`raftkv status` prints the bars once when a member lags (`render`); `raftkv status --wait SECONDS`
redraws them until every member has caught up (exit 0) or the time is up (exit 4).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.client import ClientError, Cluster, SyncClient

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Lagging", "lagging", "render", "wait_caught_up"]

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


def wait_caught_up(
    client: SyncClient,
    seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Redraw the bars until no member lags (True) or `seconds` pass (False)."""
    from rich.console import Console  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = Console(file=sys.stdout, highlight=False)
    deadline = clock() + seconds
    with Live(Text("asking the leader..."), console=console, transient=False) as live:
        while True:
            try:
                behind = lagging(client.cluster())
            except ClientError as error:
                behind = None
                live.update(Text(f"no answer from the leader: {error.code}"))
            if behind == []:
                live.update(Text("every member is caught up"))
                return True
            if behind:
                live.update(render(behind))
            if clock() >= deadline:
                return False
            sleep(POLL_S)
