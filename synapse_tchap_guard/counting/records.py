"""What the engine counts: whose count (`Key`, `StateKey`), what a request costs
(`Charge`), and one thing counted (`Entry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

import attr

from synapse_tchap_guard import inputs


class Key(NamedTuple):
    """Whose count: an account, and for a session on probation, that session too."""

    user_id: str
    session: str | None = None


class StateKey(NamedTuple):
    """One key's counts for one control: the account's (`session` "") or a session's."""

    user_id: str
    session: str
    control: str


@attr.frozen
class Charge:
    """What one request costs a control."""

    # The room, the media, the person: what the SIEM sees, made safe to store.
    target: str | None = attr.field(converter=attr.converters.optional(inputs.target))
    units: int = 1  # a download is one; a page of history, as many messages as it asks
    details: Mapping[str, object] = attr.Factory(dict)  # for the SIEM
    # Fetched by the client on its own (thread summaries, a timeline's fill), not
    # by a person's act: it never counts towards a block.
    automatic: bool = False


class Entry(NamedTuple):
    """One thing counted, as it is applied to a key's windows (immutable).

    A request is an entry: `served` the units it was served (0 if it was refused),
    `attempts` and `refusals` what it counts towards a block threshold,
    `cause_since` and `cause_until` for a refusal
    that opened a cause (see `policy`). Later entries amend it without rewriting it:
    the bytes its response sent, or a failure after it was served (`served` negative,
    at the request's own time), so that the sums over any window are right.
    """

    ts: int
    served: int = 0
    bytes: int = 0
    attempts: int = 0
    refusals: int = 0
    target: str | None = None
    cause_since: int = 0
    cause_until: int = 0

    def encode(self) -> str:
        return json.dumps(list(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Entry:
        return cls(*json.loads(text))
