"""The whole guard in-process, on a fake Synapse, a fake clock and the store's real SQL
on an in-memory SQLite: every gate, wired as Synapse wires it, driven in milliseconds.

`FakeSynapse` stands for what the guard touches of Synapse's module API (and of the
few internals `_synapse_internals` names); `Guard` builds the real `TchapGuard` on it
and plays requests through the callbacks the guard registered, as Synapse would call
them while serving a request: `is_user_expired` while authenticating it,
`user_may_join_room` for a join, the response's end afterwards.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from unittest import mock

from synapse.api.errors import SynapseError
from synapse.logging import context as logcontext
from synapse.logging.context import ContextRequest
from twisted.internet import defer, task

import synapse_tchap_guard
from synapse_tchap_guard.config import parse_config
from tests.unit.fakes import SqliteDatabase

SERVER = "example.org"
T = TypeVar("T")
_request_ids = itertools.count()


class FakeSynapse:
    """A `ModuleApi` as the guard sees it: rooms, members, users and what it registered."""

    def __init__(self) -> None:
        api: Any = mock.MagicMock(name="ModuleApi")
        api.server_name = SERVER
        api.public_baseurl = f"https://matrix.{SERVER}/"
        api.worker_name = None
        config = api._hs.config
        config.mas.enabled = False
        config.redis.redis_enabled = False
        config.email.email_notif_from = None
        config.servernotices.server_notices_mxid = None
        config.registration.enable_3pid_changes = False
        api.should_run_background_tasks.return_value = False
        api.run_as_background_process.side_effect = _background
        api.get_userinfo_by_id.side_effect = self._userinfo
        api.get_room_state.side_effect = self._room_state
        api._store.get_rooms_for_user.side_effect = self._joined
        api._store.get_number_joined_users_in_room.side_effect = self._members
        api._store.get_devices_by_user.side_effect = self._devices
        api._device_handler.delete_devices.side_effect = self._delete_devices
        api.get_threepids_for_user.side_effect = _async([])
        # What Synapse's own handlers answer before the guard amends it.
        api._hs.get_user_directory_handler().search_users = self._search_users
        api._hs.get_search_handler().search = _async({"search_categories": {}})
        self.api = api
        self.found: list[str] = []  # who the next directory search finds
        self.admins: set[str] = set()
        # room id -> (join rule, members); a room this server is not in is absent.
        self.rooms: dict[str, tuple[str, set[str]]] = {}
        self.devices: dict[str, set[str]] = {}

    def room(self, room_id: str, join_rule: str = "public", members: int = 0) -> str:
        self.rooms[room_id] = (
            join_rule,
            {f"@member{n}:{SERVER}" for n in range(members)},
        )
        return room_id

    def callbacks(self, name: str) -> Any:
        """A callback the guard registered (`user_may_join_room`...)."""
        for method in (
            self.api.register_spam_checker_callbacks,
            self.api.register_account_validity_callbacks,
        ):
            for call in method.call_args_list:
                if name in call.kwargs:
                    return call.kwargs[name]
        raise KeyError(name)

    async def _search_users(self, user_id: str, term: str, limit: int) -> Any:
        return {"limited": False, "results": [{"user_id": u} for u in self.found]}

    async def _userinfo(self, user_id: str) -> Any:
        return types.SimpleNamespace(
            is_admin=user_id in self.admins, appservice_id=None
        )

    async def _room_state(self, room_id: str, types_: Any) -> dict[Any, Any]:
        if room_id not in self.rooms:
            return {}
        rule, members = self.rooms[room_id]
        state: dict[Any, Any] = {
            ("m.room.create", ""): types.SimpleNamespace(content={}),
            ("m.room.join_rules", ""): types.SimpleNamespace(
                content={"join_rule": rule}
            ),
        }
        for member in members:
            content = {"membership": "join"}
            state[("m.room.member", member)] = types.SimpleNamespace(content=content)
        return state

    async def _joined(self, user_id: str) -> frozenset[str]:
        return frozenset(
            r for r, (_, members) in self.rooms.items() if user_id in members
        )

    async def _members(self, room_id: str) -> int:
        return len(self.rooms.get(room_id, ("", set()))[1])

    async def _devices(self, user_id: str) -> dict[str, Any]:
        return {device: {} for device in self.devices.get(user_id, set())}

    async def _delete_devices(self, user_id: str, devices: list[str]) -> None:
        self.devices[user_id] = self.devices.get(user_id, set()) - set(devices)


class Guard:
    """The real `TchapGuard` on a `FakeSynapse`."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)  # 2027
        self.synapse = FakeSynapse()
        self.database = SqliteDatabase(self.clock)
        self.module = synapse_tchap_guard.TchapGuard(
            parse_config(config or {}),
            self.synapse.api,
            clock=self.clock,
            database=self.database,
        )
        self.logged: list[Any] = []  # every audit event, as the SIEM gets it
        self.module._context.audit.listeners.append(self.logged.append)
        self._is_user_expired = self.synapse.callbacks("is_user_expired")
        self._may_join = self.synapse.callbacks("user_may_join_room")
        self._check_login = self.synapse.callbacks("check_login_for_spam")

    # --- requests, as Synapse serves them ----------------------------------------

    def get(self, user_id: str, path: str, status: int = 200) -> Answer:
        """A GET of `path`, authenticated as `user_id`: the guard's per-request check,
        then (unless it refused) the response ending with `status`."""
        return self._request(user_id, "GET", path, status)

    def join(self, user_id: str, room_id: str, status: int = 200) -> Answer:
        """A join: authenticated (the per-request check), then Synapse asks the spam
        checker, then the response ends."""
        path = f"/_matrix/client/v3/join/{room_id}"

        async def join(request: ContextRequest) -> None:
            await self._may_join(user_id, room_id, False)
            self.synapse.rooms.setdefault(room_id, ("public", set()))[1].add(user_id)

        return self._request(user_id, "POST", path, status, join)

    def login(self, user_id: str) -> SynapseError | None:
        with _in_request("POST", "/_matrix/client/v3/login"):
            return _raised(self._check_login(user_id, "DEVICE", None, [], None))

    def _request(
        self,
        user_id: str,
        method: str,
        path: str,
        status: int,
        then: Callable[[ContextRequest], Awaitable[None]] | None = None,
        sent: int = 0,
    ) -> Answer:
        with _in_request(method, path) as request:
            error = _raised(self._is_user_expired(user_id))
            if error is None and then is not None:
                request.requester = user_id  # authenticated: Synapse goes on
                error = _raised(then(request))
        if error is None:
            self.module._awaited.on_finished(request.request_id, status, sent)
        return Answer(error, request)

    def download(
        self, user_id: str, media: str, sent: int = 100, status: int = 200
    ) -> Answer:
        path = f"/_matrix/client/v1/media/download/{SERVER}/{media}"
        with _in_request("GET", path) as request:
            error = _raised(self._is_user_expired(user_id))
        if error is None:
            self.module._awaited.on_finished(request.request_id, status, sent)
        return Answer(error, request)

    def thumbnail(self, user_id: str, media: str, size: int) -> Answer:
        path = (
            f"/_matrix/client/v1/media/thumbnail/{SERVER}/{media}"
            f"?width={size}&height={size}&method=crop"
        )
        return self.get(user_id, path)

    def search_directory(self, user_id: str, term: str, found: list[str]) -> list[str]:
        """A user directory search that found `found`: what the guard lets it show."""
        handler = self.synapse.api._hs.get_user_directory_handler()
        self.synapse.found = found
        with _in_request("POST", "/_matrix/client/v3/user_directory/search"):
            shown = _result(handler.search_users(user_id, term, 50))
        return [result["user_id"] for result in shown["results"]]

    # --- what it knows --------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sync()

    def sync(self) -> None:
        _result(self.module._ledger.sync())

    def events(self, action: str | None = None) -> list[Any]:
        return [e for e in self.logged if action is None or e.action == action]


class Answer:
    """What the client got: the error raised (None: served)."""

    def __init__(self, error: SynapseError | None, request: ContextRequest) -> None:
        self.error = error
        self.request = request

    @property
    def code(self) -> int:
        return 200 if self.error is None else self.error.code

    @property
    def errcode(self) -> str | None:
        return None if self.error is None else self.error.errcode

    @property
    def body(self) -> dict[str, Any]:
        assert self.error is not None
        return dict(self.error.error_dict(None))


class _in_request:
    """A logging context carrying an HTTP request, as Synapse runs a servlet in."""

    def __init__(self, method: str, url: str) -> None:
        request_id = f"{method}-{next(_request_ids)}"
        self.request = ContextRequest(
            request_id=request_id,
            ip_address="203.0.113.9",
            site_tag="test",
            requester=None,
            authenticated_entity=None,
            method=method,
            url=url,
            protocol="1.1",
            user_agent="test",
        )
        # (a Rust class in newer releases, whose stubs mypy cannot see)
        logging_context: Any = getattr(logcontext, "LoggingContext")  # noqa: B009
        self._context = logging_context(
            name=request_id, server_name=SERVER, request=self.request
        )

    def __enter__(self) -> ContextRequest:
        self._context.__enter__()
        return self.request

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(None, None, None)


def _raised(work: Awaitable[Any]) -> SynapseError | None:
    try:
        _result(work)
    except SynapseError as error:
        return error
    return None


def _result(work: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    deferred: defer.Deferred[T] = defer.ensureDeferred(work)  # type: ignore[arg-type]
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the guard is still waiting (on a timer, or the database)"
    if isinstance(results[0], BaseException) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def _background(desc: str, func: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(func(*args))


def _async(value: Any) -> Callable[..., Any]:
    async def answer(*args: Any, **kwargs: Any) -> Any:
        return value

    return answer
