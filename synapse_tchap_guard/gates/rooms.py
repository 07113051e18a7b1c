"""Public rooms reached: joined, peeked at, or entered through a public space.

Each distinct room counts once per window (`public_room_joins`), however it was
reached:
- a join, when the room is public, or restricted to the members of a public room or
  space (anyone can join that, then this), or not known to this server yet (its
  rules cannot be read: a scraper joining rooms over federation must not go
  uncounted). Invited joins never count, nor do joins of a room the account is in:
  Synapse re-sends a join to every room on each profile change;
- a read of a room the account is not in (its history, members, state, events):
  Synapse serves it only when the room is world-readable, that is readable by
  anyone, so it is a public room reached. If the room refuses the read, the
  response gives the room back (`counting.awaited`), as a failed join does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from synapse.logging.context import ContextRequest
from synapse.module_api import NOT_SPAM

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting.records import Charge
from synapse_tchap_guard.gates.admission import Admission

# A room's members shown to an account: (user id, request, room id, how).
ShowsMembers = Callable[[str, ContextRequest | None, str, str], Awaitable[None]]

_CREATE = ("m.room.create", "")
_JOIN_RULES = ("m.room.join_rules", "")
_MEMBER = "m.room.member"
_RESTRICTED = ("restricted", "knock_restricted")


class RoomsGate:
    def __init__(
        self,
        context: GuardContext,
        admission: Admission,
        control: Control,
        members: ShowsMembers | None,
    ) -> None:
        self._context = context
        self._admission = admission
        self._control = control
        self._members = members  # the people budget (`PeopleGate.room_members`)
        self.active = control.active

    async def user_may_join_room(
        self, user_id: str, room_id: str, is_invited: bool
    ) -> Literal["NOT_SPAM"]:
        if is_invited:
            return NOT_SPAM
        if await self._join_reaches_a_public_room(user_id, room_id):
            await self._reach(user_id, internals.current_request(), room_id, "join")
        return NOT_SPAM

    async def read(self, user_id: str, request: ContextRequest, room_id: str) -> bool:
        """A read of a room's content; True if it is a peek (the account is not in
        the room), counted as a room reached."""
        if room_id in await internals.joined_rooms(self._context.api, user_id):
            return False
        await self._reach(user_id, request, room_id, "peek")
        return True

    async def _reach(
        self, user_id: str, request: ContextRequest | None, room_id: str, via: str
    ) -> None:
        """A public room reached: counted, and its members shown (its history shows
        who wrote it, its state who is in it)."""
        if self.active:
            charge = Charge(room_id, details={"via": via})
            await self._admission.admit(user_id, request, self._control, charge)
        if self._members is not None:
            await self._members(user_id, request, room_id, via)

    async def _join_reaches_a_public_room(self, user_id: str, room_id: str) -> bool:
        if await self._context.is_exempt(user_id):
            return False
        api = self._context.api
        state = await api.get_room_state(
            room_id, [_CREATE, _JOIN_RULES, (_MEMBER, user_id)]
        )
        if _CREATE not in state:
            return True  # not in the room yet: its rules are unknown
        member = state.get((_MEMBER, user_id))
        if member is not None and member.content.get("membership") == "join":
            return False  # already joined: a profile update re-sending the join
        join_rules = state.get(_JOIN_RULES)
        # Without a join rules event a room is invite-only (the spec's default).
        content = join_rules.content if join_rules is not None else {}
        rule = content.get("join_rule")
        if rule == "public":
            return True
        if rule not in _RESTRICTED:
            return False
        for allowed in content.get("allow") or ():
            if not isinstance(allowed, dict) or not isinstance(
                allowed.get("room_id"), str
            ):
                continue
            rules = await api.get_room_state(allowed["room_id"], [_JOIN_RULES])
            parent = rules.get(_JOIN_RULES)
            if parent is not None and parent.content.get("join_rule") == "public":
                return True  # anyone can join that, then this
        return False
