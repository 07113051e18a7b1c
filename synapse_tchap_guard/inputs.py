"""Values that come from outside (a request's URL, an admin's body), made safe to count,
store and log.

A request can name anything: a NUL that PostgreSQL refuses, a newline that forges a
line of the log, a megabyte of id. What the guard counts (a target: a room, a media,
a person) is therefore normalised where it enters, before it is counted: characters
no Matrix identifier holds are escaped, and an overlong value is cut and suffixed
with a digest of the whole, so that distinct values stay distinct. What an admin
writes (a reason) is refused instead if it holds what no text column stores. And
what the guard writes in Synapse's main log is one line, whatever it quotes.
"""

from __future__ import annotations

import hashlib

import attr

# Matrix identifiers are at most 255 characters (user and room ids, server names).
MAX_TARGET = 255
_DIGEST = 16  # hex characters of SHA-256 kept after a cut value


def one_line(value: object) -> str:
    """`value` as text that cannot break a line nor pass for other text.

    Every character that is not printable (control characters such as CR, LF and
    NUL, line and paragraph separators, invisible format characters, unpaired
    surrogates, spaces other than the ASCII space) is written as a Python escape
    (`\\n`, `\\x00`, `\\u2028`), and a backslash as two, so the escaping is
    unambiguous."""
    text = str(value)
    if text.isprintable() and "\\" not in text:
        return text  # the common case, at the cost of one scan
    return "".join(_escaped(char) for char in text)


def target(raw: str) -> str:
    """A value a request names (a room id, a media, a user id), as the guard counts
    and stores it: one line without NUL (see `one_line`), at most `MAX_TARGET`
    characters. Valid identifiers come out unchanged."""
    safe = one_line(raw)
    if len(safe) <= MAX_TARGET:
        return safe
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{safe[: MAX_TARGET - _DIGEST - 1]}#{digest[:_DIGEST]}"


def unstorable(text: str) -> str | None:
    """Why a database text column cannot hold `text` as it is, or None if it can.

    PostgreSQL refuses NUL, and no UTF-8 encodes an unpaired surrogate (JSON can
    carry one: `"\\ud800"`)."""
    if "\x00" in text:
        return "it holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it holds an unpaired surrogate"
    return None


def quoted(value: object, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut if it is long."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for Python to print
        return "a number that long"
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...{text[-10:]} ({len(text)} characters)"


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


@attr.frozen
class RequestInfo:
    """Where a request came from, as Synapse saw it (all client-controlled but the IP)."""

    ip: str | None = None
    user_agent: str | None = None
    path: str | None = None
    method: str | None = None
    request_id: str | None = None
