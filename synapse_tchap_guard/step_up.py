"""The step-up endpoint: re-authenticate to get a larger directory budget for a while.

`POST /_synapse/client/tchap_guard/v1/step_up` runs standard User-Interactive Auth, so
a client's existing UIA code (the one it uses to delete a device) drives it: a first
call answers 401 with the flows and a session; the client completes a flow (password,
or SSO through Synapse's fallback page) and calls again with `auth`. A wrong password
is a failed step-up: reported, counted, and enough of them block the account.
"""

from __future__ import annotations

from synapse.module_api import (
    DirectServeJsonResource,
    JsonDict,
    SynapseRequest,
    parse_json_object_from_request,
)
from synapse.module_api.errors import SynapseError

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import AuditEvent, RequestInfo, format_timestamp
from synapse_tchap_guard.config import format_duration
from synapse_tchap_guard.context import STEP_UP_PATH, GuardContext
from synapse_tchap_guard.gates.counted import Charge, CountedGate
from synapse_tchap_guard.live_counts import LiveCounts
from synapse_tchap_guard.policy import StepUp
from synapse_tchap_guard.store import StoreUnavailable

PATH = STEP_UP_PATH
DESCRIPTION = "Confirm it is you, to go on looking people up in the directory"


class StepUpResource(DirectServeJsonResource):
    isLeaf = True

    def __init__(
        self,
        context: GuardContext,
        step_up: StepUp,
        counts: LiveCounts,
        failures: CountedGate,
    ) -> None:
        super().__init__()
        self._context = context
        self._step_up = step_up
        self._counts = counts  # what the step-up lifts
        self._failures = failures

    async def _async_render_POST(self, request: SynapseRequest) -> tuple[int, JsonDict]:
        api = self._context.api
        requester = await api.get_user_by_req(request)
        user_id = requester.user.to_string()
        body = parse_json_object_from_request(request, allow_empty_body=True)
        info = internals.request_info(internals.current_request())
        try:
            await internals.reauthenticate(api, requester, request, body, DESCRIPTION)
        except internals.InteractiveAuthIncomplete as incomplete:
            if "errcode" in incomplete.result:  # credentials were given, and wrong
                await self._failed(user_id, incomplete.result, info)
            return 401, incomplete.result
        except SynapseError as refused:
            if refused.code == 403:  # SSO signed in someone else, or a refused login
                await self._failed(user_id, refused.error_dict(None), info)
            raise
        return 200, await self._succeeded(user_id, info)

    async def _succeeded(self, user_id: str, info: RequestInfo | None) -> JsonDict:
        now = self._context.now()
        until = now + self._step_up.valid_for_ms
        budget = self._step_up.limits[0]
        event = AuditEvent(
            action="step_up_succeeded",
            ts=now,
            user_id=user_id,
            message=f"{user_id} re-authenticated: directory budget lifted",
            request=info,
            guard={
                "control": "directory",
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
        self._counts.forget(user_id)  # its next lookup sees the step-up
        return {
            "step_up_valid_until": format_timestamp(until),
            "step_up_valid_until_ms": until,
            "budget": {
                "max_profiles": budget.max,
                "window": format_duration(budget.window_ms),
            },
        }

    async def _failed(
        self, user_id: str, result: JsonDict, info: RequestInfo | None
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
                    guard={"control": "directory", "errcode": result.get("errcode")},
                )
            ]
        )
        if self._failures.control.active:
            request = internals.current_request()  # raises once it blocks:
            await self._failures.admit(user_id, request, Charge(None))
