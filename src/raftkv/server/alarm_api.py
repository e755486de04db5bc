"""The alarm routes: `GET /v1/alarms` (the cluster's alarms) and `POST /v1/alarms/disarm`
(end NOSPACE alarms, as `etcdctl alarm disarm` does).

Alarms are replicated state, the same on every member (`raftkv.kv.hash_checks` for
CORRUPT, `raftkv.kv.space_alarms` for NOSPACE), so any member answers. The list is read
after a ReadIndex (linearizable): an operator who just disarmed sees the disarm. Only
NOSPACE alarms can be disarmed: a CORRUPT alarm ends when its member is removed.
"""

from __future__ import annotations

from aiohttp import web

from raftkv.api.cluster import AlarmAnswer, AlarmsAnswer, DisarmBody
from raftkv.kv.service import KvService
from raftkv.server.http_common import decode_body, json_answer

__all__ = ["AlarmHandlers", "alarm_answers"]


def alarm_answers(service: KvService) -> list[AlarmAnswer]:
    """Every alarm this node has applied: CORRUPT ones, then NOSPACE ones, by member."""
    return [
        *(
            AlarmAnswer("CORRUPT", alarm.member_id, alarm.check_index, alarm.reason)
            for alarm in service.corrupt_alarms()
        ),
        *(
            AlarmAnswer("NOSPACE", alarm.member_id, alarm.raised_index, alarm.reason)
            for alarm in service.nospace_alarms()
        ),
    ]


class AlarmHandlers:
    def __init__(self, service: KvService, timeout: float, max_body_bytes: int) -> None:
        self.service = service
        # How long a read waits for its read point, and a disarm for its outcome.
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes

    async def alarms(self, request: web.Request) -> web.Response:
        await self.service.read_barrier(timeout=self.timeout)
        return json_answer(AlarmsAnswer(alarm_answers(self.service)))

    async def disarm(self, request: web.Request) -> web.Response:
        body = await decode_body(request, DisarmBody, self.max_body_bytes)
        await self.service.disarm_nospace_alarms(body.member, timeout=self.timeout)
        return json_answer(AlarmsAnswer(alarm_answers(self.service)))
