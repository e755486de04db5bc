"""The web console (issue 18): `/ui` on every node's client port shows the whole cluster
in a browser, with nothing but the package installed.

- `assets`: the page and its files (`static/`, package data; plain JS and CSS, charts
  drawn as SVG by the page itself: no library, no CDN, nothing fetched from elsewhere).
- `observation`: what the console reads of its node each interval (its own metrics);
  `events`: the ring of cluster events found between observations (`GET /v1/events`);
  `history`: the metrics history (`GET /v1/console/history`).
- `members`: every member's state, asked over its client URL (`GET /v1/console/members`).
- `handlers`: the routes, and the task that observes the node while the app runs.

docs/console.md describes the page.
"""

from __future__ import annotations

from raftkv.server.console.handlers import ConsoleHandlers, ConsoleSettings

__all__ = ["ConsoleHandlers", "ConsoleSettings"]
