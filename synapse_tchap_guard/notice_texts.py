"""What an account's owner reads: the step-up code email, and the notices of a block
and of a step-up. Plain text and HTML from the same facts, no Synapse.

Each says what happened, when, from which IP address and client, and what to do if
it was not them. Everything that came from a request (the client's name above all)
is escaped in the HTML.
"""

from __future__ import annotations

import html

import attr

from synapse_tchap_guard.responses import format_moment


@attr.frozen
class Circumstances:
    """When something happened, and the request that made it happen, if any."""

    ts: int
    ip: str | None = None
    user_agent: str | None = None

    def lines(self) -> list[str]:
        lines = [f"When: {format_moment(self.ts)}"]
        if self.ip or self.user_agent:
            ip = self.ip or "unknown"
            client = self.user_agent or "unknown"
            lines.append(f'From: IP address {ip}, client "{client}"')
        return lines


@attr.frozen
class Message:
    subject: str
    text: str
    html: str

    def server_notice(self) -> dict[str, str]:
        """The content of an `m.room.message` in the server notices room."""
        return {
            "msgtype": "m.text",
            "body": self.text,
            "format": "org.matrix.custom.html",
            "formatted_body": self.html,
        }


_NOT_YOU_CODE = (
    "If it was not you, do not give this code to anyone, even someone who says they"
    " work for your administrator: someone may know your password. Change it, and"
    " tell your homeserver administrator."
)
_NOT_YOU_STEP_UP = (
    "If it was not you, someone else is using your account right now: tell your"
    " homeserver administrator at once, and change your password."
)
_NOT_YOU_BLOCK = (
    "If it was not you, someone else may be using your account: tell your homeserver"
    " administrator, and change your password once the block is lifted. If it was"
    " you and you need the block lifted, ask your administrator."
)


def code_email(
    user_id: str, server_name: str, code: str, valid_for: str, seen: Circumstances
) -> Message:
    return _message(
        f"Your code to confirm it is you on {server_name}",
        [
            f"Someone using your account {user_id} asked to confirm it is you, to go"
            f" on looking people up in the directory of {server_name}.",
            f"Your code: {code}\nIt works once, for {valid_for}.",
            "\n".join(seen.lines()),
            _NOT_YOU_CODE,
        ],
    )


def block_notice(
    user_id: str,
    server_name: str,
    reason: str,
    by_admin: bool,
    until_ts: int | None,
    seen: Circumstances,
) -> Message:
    until = (
        f"until {format_moment(until_ts)}"
        if until_ts is not None
        else "until an administrator lifts it"
    )
    if by_admin:
        why = f"An administrator blocked it: {reason}."
        # The request was the administrator's: where it came from is not the owner's.
        seen = Circumstances(seen.ts)
    else:
        why = (
            f"The homeserver's security policy blocked it: {reason}. The request that"
            " crossed the line is below."
        )
    return _message(
        f"Your account {user_id} is blocked",
        [
            f"Your account {user_id} on {server_name} is blocked {until}. While it is"
            " blocked it cannot sign in, and its sessions were ended.",
            why,
            "\n".join(seen.lines()),
            _NOT_YOU_BLOCK,
        ],
    )


def step_up_notice(
    user_id: str,
    server_name: str,
    method: str,
    budget: str,
    until_ts: int,
    seen: Circumstances,
) -> Message:
    return _message(
        f"Your account {user_id} confirmed it is you",
        [
            f"Your account {user_id} on {server_name} confirmed it is you, with"
            f" {method}. Until {format_moment(until_ts)} it may look up {budget} in"
            " the directory.",
            "\n".join(seen.lines()),
            _NOT_YOU_STEP_UP,
        ],
    )


def _message(subject: str, paragraphs: list[str]) -> Message:
    text = "\n\n".join(paragraphs) + "\n"
    body = "".join(
        "<p>" + html.escape(paragraph).replace("\n", "<br>") + "</p>"
        for paragraph in paragraphs
    )
    return Message(subject, text, body)


def mask_address(address: str) -> str:
    """`camille.martin@interieur.gouv.fr` as `c***@i***.gouv.fr`: enough for the owner
    to recognise it, not enough to read it off a screen or a log."""
    local, _, domain = address.partition("@")
    first, *rest = domain.split(".")
    return ".".join([f"{local[:1]}***@{first[:1]}***", *rest])
