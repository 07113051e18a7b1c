"""The step-up endpoint: re-authenticate to get a larger directory budget for a while.

`POST /_synapse/client/tchap_guard/v1/step_up` speaks standard User-Interactive Auth,
so a client's existing UIA code (the one it uses to delete a device) drives it: a
first call answers 401 with the flows this account may use and a session; the client
completes one and calls again with `auth`. The flows are the configured methods the
account can use (`directory.step_up_methods`): SSO and password are Synapse's own
stages, checked by Synapse's UIA with only those flows; the email code is the guard's
stage (`fr.gouv.tchap.guard.email_code`) in the same session. A stage that is not
offered is refused without being checked (a phished password learns nothing), and
counts as a failed step-up like a wrong password or code: enough of them block the
account. A successful step-up is reported, and its owner told.
"""

from __future__ import annotations

from typing import Any

from synapse.module_api import (
    DirectServeJsonResource,
    JsonDict,
    SynapseRequest,
    parse_json_object_from_request,
)
from synapse.module_api.errors import Codes, SynapseError

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import AuditEvent, format_timestamp
from synapse_tchap_guard.config import DirectoryConfig
from synapse_tchap_guard.context import STEP_UP_PATH, GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.counting.records import Charge
from synapse_tchap_guard.email_codes import EmailCodes
from synapse_tchap_guard.gates.admission import Admission
from synapse_tchap_guard.inputs import RequestInfo
from synapse_tchap_guard.notices import OwnerNotices
from synapse_tchap_guard.policy import StepUp
from synapse_tchap_guard.step_up_methods import EMAIL_CODE_STAGE, Method, offered
from synapse_tchap_guard.store.database import StoreUnavailable
from synapse_tchap_guard.units import format_duration

PATH = STEP_UP_PATH
DESCRIPTION = "Confirm it is you, to go on looking people up in the directory"


class StepUpResource(DirectServeJsonResource):
    isLeaf = True

    def __init__(
        self,
        context: GuardContext,
        directory: DirectoryConfig,
        step_up: StepUp,
        admission: Admission,
        failures: Control,
        codes: EmailCodes,
        notices: OwnerNotices | None,
    ) -> None:
        super().__init__()
        self._context = context
        self._methods = directory.methods
        self._step_up = step_up  # what it lifts the people budget to, how long
        self._admission = admission
        self._failures = failures
        self._codes = codes
        self._notices = notices

    async def _async_render_POST(self, request: SynapseRequest) -> tuple[int, JsonDict]:
        requester = await self._context.api.get_user_by_req(request)
        user_id = requester.user.to_string()
        body = parse_json_object_from_request(request, allow_empty_body=True)
        auth = _auth_of(body)
        info = internals.request_info(internals.current_request())
        methods = await self._offered(user_id)
        if not methods:
            raise responses.no_step_up_method()
        stage = auth.get("type")
        method = Method.of_stage(stage) if isinstance(stage, str) else None
        if stage is not None and method not in methods:
            # Not checked at all: a password that is not accepted here stays unknown.
            refusal = {
                **await self._challenge(user_id, _flows(methods), methods),
                "errcode": Codes.FORBIDDEN,
                "error": f"{stage!r} is not accepted here: use one of the flows offered",
            }
            if isinstance(auth.get("session"), str):
                refusal["session"] = auth["session"]
            await self._failed(user_id, refusal, info, str(stage))
            return 401, refusal
        if method is Method.EMAIL_CODE:
            return await self._email_code(request, user_id, auth, methods, info)
        try:
            creds = await self._synapse_auth(request, user_id, body, methods)
        except internals.InteractiveAuthIncomplete as incomplete:
            result = await self._challenge(user_id, incomplete.result, methods)
            if "errcode" in result:  # credentials were given, and wrong
                await self._failed(user_id, result, info, stage or "session")
            return 401, result
        return 200, await self._proved(user_id, creds, methods, info)

    async def _offered(self, user_id: str) -> tuple[Method, ...]:
        """The configured methods this account can use now."""
        stages = await internals.reauthentication_types(self._context.api, user_id)
        available = {method for method in Method if method.stage in stages}
        if Method.EMAIL_CODE in self._methods and await self._codes.usable(user_id):
            available.add(Method.EMAIL_CODE)
        return offered(self._methods, available)

    async def _synapse_auth(
        self,
        request: SynapseRequest,
        user_id: str,
        body: JsonDict,
        methods: tuple[Method, ...],
    ) -> dict[str, Any]:
        """Synapse's UIA, with the offered stages as its flows (the email code among
        them, which Synapse lists but never completes: this endpoint checks it)."""
        return await internals.user_interactive_auth(
            self._context.api,
            user_id,
            request,
            body,
            [method.stage for method in methods],
            DESCRIPTION,
        )

    async def _challenge(
        self, user_id: str, result: JsonDict, methods: tuple[Method, ...]
    ) -> JsonDict:
        """Synapse's 401, with the email code's `params` where it is offered."""
        if Method.EMAIL_CODE in methods:
            params = dict(result.get("params") or {})
            params.setdefault(EMAIL_CODE_STAGE, await self._codes.describe(user_id))
            result = {**result, "params": params}
        return result

    async def _email_code(
        self,
        request: SynapseRequest,
        user_id: str,
        auth: JsonDict,
        methods: tuple[Method, ...],
        info: RequestInfo | None,
    ) -> tuple[int, JsonDict]:
        """Send a code (`auth` without `code`) or check one, in a session Synapse
        started here."""
        session = auth.get("session")
        if not isinstance(session, str) or not session:
            raise SynapseError(
                400,
                "auth.session: start with an empty request to get a session",
                Codes.MISSING_PARAM,
            )
        try:
            # Synapse checks that the session exists and was started here.
            creds = await self._synapse_auth(
                request, user_id, {"auth": {"session": session}}, methods
            )
        except internals.InteractiveAuthIncomplete as incomplete:
            result = dict(incomplete.result)
        else:  # the session completed SSO meanwhile: that is a step-up too
            return 200, await self._proved(user_id, creds, methods, info)
        params = dict(result.get("params") or {})
        result["params"] = params
        if "code" not in auth:
            params[EMAIL_CODE_STAGE] = await self._codes.send(user_id, session, info)
            return 401, result
        redeemed = await self._codes.redeem(user_id, session, auth["code"])
        if redeemed.failure is None:
            return 200, await self._succeeded(user_id, Method.EMAIL_CODE, info)
        params[EMAIL_CODE_STAGE] = {
            **await self._codes.describe(user_id),
            "tries_left": redeemed.tries_left,
        }
        result.update(
            errcode=Codes.FORBIDDEN, error=f"The code was refused: {redeemed.failure}."
        )
        await self._failed(user_id, result, info, EMAIL_CODE_STAGE)
        return 401, result

    async def _proved(
        self,
        user_id: str,
        creds: dict[str, Any],
        methods: tuple[Method, ...],
        info: RequestInfo | None,
    ) -> JsonDict:
        """A completed flow proves the step-up if it proved this very account (an SSO
        sign-in as someone else completes the stage, for no one)."""
        for method in methods:
            if creds.get(method.stage) == user_id:
                return await self._succeeded(user_id, method, info)
        refused = SynapseError(403, "Invalid auth", Codes.FORBIDDEN)
        await self._failed(user_id, refused.error_dict(None), info, ",".join(creds))
        raise refused

    async def _succeeded(
        self, user_id: str, method: Method, info: RequestInfo | None
    ) -> JsonDict:
        now = self._context.now()
        until = now + self._step_up.valid_for_ms
        budget = self._step_up.limits[0]
        event = AuditEvent(
            action="step_up_succeeded",
            ts=now,
            user_id=user_id,
            message=f"{user_id} re-authenticated ({method.value}): directory budget lifted",
            request=info,
            guard={
                "control": "directory",
                "method": method.value,
                "step_up_valid_until": format_timestamp(until),
                "budget": budget.max,
                "window": format_duration(budget.window_ms),
            },
        )
        try:
            await self._context.store.accounts.record_step_up(
                user_id, now, until, [event]
            )
        except StoreUnavailable:
            raise responses.tables_unavailable() from None
        self._context.emit([event])
        # Its next lookup sees the step-up (elsewhere, within seconds).
        await self._admission.ledger.refresh_marks(user_id)
        if self._notices is not None:
            self._notices.stepped_up(user_id, method, budget, now, until, info)
        return {
            "step_up_valid_until": format_timestamp(until),
            "step_up_valid_until_ms": until,
            "budget": {
                "max_profiles": budget.max,
                "window": format_duration(budget.window_ms),
            },
        }

    async def _failed(
        self, user_id: str, result: JsonDict, info: RequestInfo | None, stage: str
    ) -> None:
        """Report a failed re-authentication and count it; enough of them block."""
        await self._context.report(
            [
                AuditEvent(
                    action="step_up_failed",
                    ts=self._context.now(),
                    user_id=user_id,
                    message=f"{user_id} failed to re-authenticate",
                    reason=str(result.get("error", "")),
                    request=info,
                    guard={
                        "control": "directory",
                        "errcode": result.get("errcode"),
                        "stage": stage,
                    },
                )
            ]
        )
        if self._failures.active:
            request = internals.current_request()  # raises once it blocks:
            await self._admission.admit(user_id, request, self._failures, Charge(None))


def _auth_of(body: JsonDict) -> JsonDict:
    """The body's `auth`, checked before Synapse reads it."""
    auth = body.get("auth")
    if auth is None:
        return {}
    if not isinstance(auth, dict):
        raise SynapseError(400, "auth: expected an object", Codes.BAD_JSON)
    for key in ("session", "type"):
        if key in auth and not isinstance(auth[key], str):
            raise SynapseError(400, f"auth.{key}: expected a string", Codes.BAD_JSON)
    return auth


def _flows(methods: tuple[Method, ...]) -> JsonDict:
    return {"flows": [{"stages": [method.stage]} for method in methods], "params": {}}
