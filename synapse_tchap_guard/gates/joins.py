"""Public-room joins: which joins count, on Synapse's `user_may_join_room` hook.

A join counts when the room is public, or when this server is not in the room yet so
its rules cannot be known (conservatively: a scraper joining rooms over federation
must not go uncounted). Invited joins never count, nor do re-joins of a room the user
is already in: Synapse re-sends a join to every room on each profile change. Joins
are rare, so each is judged exactly, in the database (`ExactGate`).
"""

from __future__ import annotations

from typing import Literal

from synapse.module_api import NOT_SPAM

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import inputs
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.gates.exact import ExactGate

_CREATE = ("m.room.create", "")
_JOIN_RULES = ("m.room.join_rules", "")
_MEMBER = "m.room.member"


class JoinGate:
    def __init__(self, context: GuardContext, exact: ExactGate) -> None:
        self._context = context
        self._exact = exact
        self._active = exact.control.active

    async def user_may_join_room(
        self, user_id: str, room_id: str, is_invited: bool
    ) -> Literal["NOT_SPAM"]:
        if not self._active or is_invited:
            return NOT_SPAM
        if await self._join_counts(user_id, room_id):
            request = internals.request_info(internals.current_request())
            await self._exact.count(user_id, inputs.target(room_id), request)
        return NOT_SPAM

    async def _join_counts(self, user_id: str, room_id: str) -> bool:
        if await self._context.is_exempt(user_id):
            return False
        state = await self._context.api.get_room_state(
            room_id, [_CREATE, _JOIN_RULES, (_MEMBER, user_id)]
        )
        if _CREATE not in state:
            return True  # not in the room yet: its rules are unknown
        member = state.get((_MEMBER, user_id))
        if member is not None and member.content.get("membership") == "join":
            return False  # already joined: a profile update re-sending the join
        join_rules = state.get(_JOIN_RULES)
        # Without a join rules event a room is invite-only (the spec's default).
        return (
            join_rules is not None and join_rules.content.get("join_rule") == "public"
        )
