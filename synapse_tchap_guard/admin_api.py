"""The admin API: list and inspect blocked accounts, block, unblock, read counters,
list the blocks that ended.

Served under `/_synapse/client/tchap_guard/admin/v1/` (module resources cannot live
under `/_synapse/admin`), to server admins only. Every call that reads or changes an
account is itself an audit event naming the admin, reads included: an account's
recent actions are personal data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import attr
from synapse.module_api import (
    DirectServeJsonResource,
    JsonDict,
    ModuleApi,
    SynapseRequest,
    UserID,
    parse_json_object_from_request,
)
from synapse.module_api.errors import Codes, ConfigError, SynapseError

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import AuditEvent, describe_block, format_timestamp
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.config import is_user_id, parse_duration
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import BY_NAME, Control
from synapse_tchap_guard.counting.layout import Layout
from synapse_tchap_guard.counting.ledger import Ledger
from synapse_tchap_guard.counting.state import CountState
from synapse_tchap_guard.inputs import quoted, unstorable
from synapse_tchap_guard.model import AlreadyBlocked
from synapse_tchap_guard.store.blocks import EXPIRY, LIFTED, PastFilter, PastKey
from synapse_tchap_guard.store.database import StoreUnavailable

logger = logging.getLogger(__name__)

PREFIX = "/_synapse/client/tchap_guard/admin/v1"
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_REASON = 1000
RECENT = 50
_DIGITS = re.compile("[0-9]{1,19}")  # more is out of range (and slow to convert)
_PAST_TOKEN = re.compile("([0-9]{1,19})_([0-9]{1,19})")  # a block's end, its id
MAX_TS = 2**62
ADMIN_CONTROL = "admin"  # `control` of the blocks an admin set


class AdminResource(DirectServeJsonResource):
    isLeaf = True

    def __init__(
        self,
        context: GuardContext,
        blocking: Blocking,
        controls: list[Control],
        ledger: Ledger,
    ) -> None:
        super().__init__()
        self._context = context
        self._api: ModuleApi = context.api
        self._blocking = blocking
        self._controls = controls
        self._ledger = ledger

    async def _async_render_GET(self, request: SynapseRequest) -> tuple[int, JsonDict]:
        return await self._answer(self._get, request)

    async def _async_render_POST(self, request: SynapseRequest) -> tuple[int, JsonDict]:
        return await self._answer(self._post, request)

    async def _answer(
        self,
        endpoint: Callable[[SynapseRequest], Awaitable[tuple[int, JsonDict]]],
        request: SynapseRequest,
    ) -> tuple[int, JsonDict]:
        """An endpoint's answer; when the guard's tables cannot answer, a 503 with
        `Retry-After`, never a 500."""
        try:
            return await endpoint(request)
        except StoreUnavailable as error:
            logger.error("tchap_guard admin API: the tables did not answer: %s", error)
            raise responses.tables_unavailable() from None

    async def _get(self, request: SynapseRequest) -> tuple[int, JsonDict]:
        admin = await self._authenticate(request)
        route = _route(request)
        if route == ["blocks"]:
            return 200, await self._list_blocks(request, admin)
        if route == ["past_blocks"]:
            return 200, await self._list_past_blocks(request, admin)
        if len(route) == 2 and route[0] == "accounts":
            return 200, await self._show_account(await self._account(route[1]), admin)
        raise _unknown_endpoint(request)

    async def _post(self, request: SynapseRequest) -> tuple[int, JsonDict]:
        admin = await self._authenticate(request)
        route = _route(request)
        if len(route) == 3 and route[0] == "accounts" and route[2] == "block":
            user_id = await self._account(route[1])
            return 200, await self._block(request, user_id, admin)
        if len(route) == 3 and route[0] == "accounts" and route[2] == "unblock":
            user_id = await self._account(route[1])
            return 200, await self._unblock(request, user_id, admin)
        raise _unknown_endpoint(request)

    # --- endpoints -------------------------------------------------------------

    async def _list_blocks(self, request: SynapseRequest, admin: str) -> JsonDict:
        limit = _int_arg(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        before = _int_arg(request, "from", None, 1, MAX_TS)
        blocks, total = await self._context.store.blocks.page(
            self._context.now(), limit, before
        )
        await self._audit_view(admin, None, "blocks", "the blocks in force")
        page: JsonDict = {"blocks": [describe_block(b) for b in blocks], "total": total}
        if len(blocks) == limit:
            page["next_token"] = str(blocks[-1].id)
        return page

    async def _list_past_blocks(self, request: SynapseRequest, admin: str) -> JsonDict:
        limit = _int_arg(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        after = _past_token(request)
        wanted = PastFilter(
            user_id=self._local_user_arg(request, "user_id"),
            control=_control_arg(request),
            ended_by=self._lifted_by_arg(request),
            since=_int_arg(request, "since", None, 0, MAX_TS),
            until=_int_arg(request, "until", None, 0, MAX_TS),
        )
        if (
            wanted.since is not None
            and wanted.until is not None
            and wanted.since >= wanted.until
        ):
            raise SynapseError(400, "since: must be before until", Codes.INVALID_PARAM)
        blocks, total, more = await self._context.store.blocks.past(
            self._context.now(), limit, wanted, after
        )
        filters = {
            name: value
            for name, value in attr.asdict(wanted).items()
            if value is not None
        }
        await self._audit_view(
            admin,
            wanted.user_id,
            "past_blocks",
            f"the past blocks of {wanted.user_id}" if wanted.user_id else "past blocks",
            filters,
        )
        page: JsonDict = {"blocks": [describe_block(b) for b in blocks], "total": total}
        if more:
            last = blocks[-1]
            page["next_token"] = f"{last.ended_ts}_{last.id}"
        return page

    async def _show_account(self, user_id: str, admin: str) -> JsonDict:
        context = self._context
        store = context.store
        ledger = self._ledger
        # What this process counted, in the tables (unless they do not answer soon).
        await store.database.lanes.wait_briefly(ledger.flush)
        now = context.now()
        block = await store.blocks.in_force_for(user_id, now)
        account = await ledger.stored(user_id)
        marks = account.marks
        counters = {}
        for control in self._controls:
            state = account.states.get((control.name, "")) or CountState(
                Layout.of(ledger.shape(control), marks)
            )
            counters[control.name] = control.report(state, now, marks)
        reached = await store.counts.reached(user_id, RECENT)
        await self._audit_view(admin, user_id, "account", user_id)
        return {
            "user_id": user_id,
            "exempt": account.exempt,
            "blocked": block is not None,
            "block": describe_block(block) if block else None,
            "counters_reset": _moment(marks.counters_reset_ts),
            "counters": counters,
            # The rooms and people it reached lately (each once per window); every
            # request it made, downloads included, is in Synapse's access log.
            "reached": [
                {
                    "time": format_timestamp(ts),
                    "ts": ts,
                    "control": control,
                    "session": session or None,
                    "target": target,
                }
                for control, session, target, ts in reached
            ],
            "recent_events": await store.audit.recent(user_id, RECENT),
            "block_history": [
                describe_block(b) for b in await store.blocks.history(user_id, RECENT)
            ],
        }

    async def _block(
        self, request: SynapseRequest, user_id: str, admin: str
    ) -> JsonDict:
        body = parse_json_object_from_request(request)
        reason = _reason(body)
        duration = self._context.config.blocking.duration_ms
        if body.get("duration") is not None:
            try:
                duration = parse_duration(body["duration"], ("duration",))
            except ConfigError as e:
                raise SynapseError(400, e.msg, Codes.INVALID_PARAM) from None
        block_admin = body.get("block_admin", False)
        if not isinstance(block_admin, bool):
            raise SynapseError(
                400, "block_admin: use true or false", Codes.INVALID_PARAM
            )
        if user_id == admin:
            # It would lock the admin out of the API that lifts it.
            raise SynapseError(
                403,
                "You cannot block yourself: ask another server admin",
                Codes.FORBIDDEN,
            )
        if not block_admin and await self._api.is_user_admin(user_id):
            raise SynapseError(
                403,
                f"{user_id} is a server admin: a block would lock it out of this API"
                ' too. To block it anyway, send "block_admin": true',
                Codes.FORBIDDEN,
            )
        info = internals.request_info(internals.current_request())
        try:
            block = await self._blocking.block_by_admin(
                user_id, admin, reason, duration, info
            )
        except AlreadyBlocked as e:
            raise SynapseError(
                409,
                f"{user_id} is already blocked (block {e.block.id});"
                " unblock it first to change the block",
                Codes.UNKNOWN,
            ) from None
        return {"user_id": user_id, "blocked": True, "block": describe_block(block)}

    async def _unblock(
        self, request: SynapseRequest, user_id: str, admin: str
    ) -> JsonDict:
        reason = _reason(parse_json_object_from_request(request))
        info = internals.request_info(internals.current_request())
        lifted = await self._blocking.unblock_by_admin(user_id, admin, reason, info)
        if lifted is None:
            raise SynapseError(409, f"{user_id} is not blocked", Codes.UNKNOWN)
        return {
            "user_id": user_id,
            "blocked": False,
            "block": describe_block(lifted),
            "counters_reset": True,
        }

    # --- checks ----------------------------------------------------------------

    async def _authenticate(self, request: SynapseRequest) -> str:
        """401 without a valid token, 403 for anyone but a server admin."""
        requester = await self._api.get_user_by_req(request)
        user_id = requester.user.to_string()
        if not await self._api.is_user_admin(user_id):
            raise SynapseError(403, "You are not a server admin", Codes.FORBIDDEN)
        return user_id

    async def _account(self, raw: str) -> str:
        """A local account that exists: 400 for a malformed or remote id, else 404."""
        if not is_user_id(raw):
            raise SynapseError(
                400,
                f"{quoted(raw)} is not a user id (use @alice:example.org)",
                Codes.INVALID_PARAM,
            )
        user = UserID.from_string(raw)
        user_id = user.to_string()
        if not self._api.is_mine(user):
            raise SynapseError(
                400, "Only local users can be managed", Codes.INVALID_PARAM
            )
        if await self._api.get_userinfo_by_id(user_id) is None:
            raise SynapseError(404, f"Unknown user {user_id}", Codes.NOT_FOUND)
        return user_id

    def _local_user_arg(self, request: SynapseRequest, name: str) -> str | None:
        """A query argument naming a local user, who need not exist any more."""
        raw = _text_arg(request, name)
        if raw is None:
            return None
        if not is_user_id(raw):
            raise SynapseError(
                400,
                f"{name}: {quoted(raw)} is not a user id (use @alice:example.org)",
                Codes.INVALID_PARAM,
            )
        user = UserID.from_string(raw)
        if not self._api.is_mine(user):
            raise SynapseError(
                400,
                f"{name}: {quoted(raw)} is not a user of this server",
                Codes.INVALID_PARAM,
            )
        return user.to_string()

    def _lifted_by_arg(self, request: SynapseRequest) -> str | None:
        raw = _text_arg(request, "lifted_by")
        if raw is None or raw in (EXPIRY, LIFTED):
            return raw
        if not raw.startswith("@"):
            raise SynapseError(
                400,
                f"lifted_by: {quoted(raw)} is neither {EXPIRY!r}, {LIFTED!r}"
                " nor the user id of an admin",
                Codes.INVALID_PARAM,
            )
        return self._local_user_arg(request, "lifted_by")

    async def _audit_view(
        self,
        admin: str,
        user_id: str | None,
        what: str,
        target: str,
        filters: JsonDict | None = None,
    ) -> None:
        guard: JsonDict = {"endpoint": what}
        if filters:
            guard["filters"] = filters
        request = internals.request_info(internals.current_request())
        await self._context.report(
            [
                AuditEvent(
                    action="admin_view",
                    ts=self._context.now(),
                    user_id=user_id,
                    actor=admin,
                    message=f"{admin} viewed {target}",
                    request=request,
                    guard=guard,
                )
            ]
        )


def _route(request: SynapseRequest) -> list[str]:
    """The path below the API's prefix, one string a segment (Twisted unquoted them)."""
    try:
        return [
            segment.decode("utf-8") for segment in request.postpath or () if segment
        ]
    except UnicodeDecodeError:
        raise SynapseError(
            400, "The path is not valid UTF-8", Codes.INVALID_PARAM
        ) from None


def _unknown_endpoint(request: SynapseRequest) -> SynapseError:
    return SynapseError(404, "Unrecognized request", Codes.UNRECOGNIZED)


def _int_arg(
    request: SynapseRequest, name: str, default: int | None, low: int, high: int
) -> Any:
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    raw = values[0].decode("utf-8", "replace")
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise SynapseError(
            400,
            f"{name}: {quoted(raw)} is not a whole number from {low} to {high}",
            Codes.INVALID_PARAM,
        )
    return int(raw)


def _text_arg(request: SynapseRequest, name: str) -> str | None:
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    raw: str = values[0].decode("utf-8", "replace")
    problem = unstorable(raw)
    if problem is not None:
        raise SynapseError(400, f"{name}: {problem}", Codes.INVALID_PARAM)
    return raw


def _control_arg(request: SynapseRequest) -> str | None:
    raw = _text_arg(request, "control")
    known = [ADMIN_CONTROL, *BY_NAME]
    if raw is None or raw in known:
        return raw
    raise SynapseError(
        400,
        f"control: {quoted(raw)} is not one of {', '.join(known)}",
        Codes.INVALID_PARAM,
    )


def _past_token(request: SynapseRequest) -> PastKey | None:
    raw = _text_arg(request, "from")
    if raw is None:
        return None
    match = _PAST_TOKEN.fullmatch(raw)
    if match is None or int(match[1]) > MAX_TS or int(match[2]) > MAX_TS:
        raise SynapseError(
            400,
            f"from: {quoted(raw)} is not a next_token this endpoint gave",
            Codes.INVALID_PARAM,
        )
    return PastKey(int(match[1]), int(match[2]))


def _reason(body: JsonDict) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise SynapseError(
            400, "reason: say why, as a non-empty string", Codes.MISSING_PARAM
        )
    if len(reason) > MAX_REASON:
        raise SynapseError(
            400, f"reason: at most {MAX_REASON} characters", Codes.INVALID_PARAM
        )
    problem = unstorable(reason)
    if problem is not None:
        raise SynapseError(400, f"reason: {problem}", Codes.INVALID_PARAM)
    return reason.strip()


def _moment(ts: int) -> str | None:
    return format_timestamp(ts) if ts else None
