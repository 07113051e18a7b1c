"""`tchap-guard-admin`: the guard's admin API from a terminal or a script.

    tchap-guard-admin list                         the accounts blocked now
    tchap-guard-admin show @alice:example.org      one account: block, counters, history
    tchap-guard-admin block alice --for 24h --reason "phishing report"
    tchap-guard-admin unblock alice --reason "verified by phone"
    tchap-guard-admin history --since 7d --lifted-by expiry

The homeserver's URL and a server admin's access token come from `--url` and
`--token`, else from TCHAP_GUARD_URL and TCHAP_GUARD_TOKEN, else from a small config
file (`~/.config/tchap-guard-admin.yaml`, or `--config`), as synadm is configured.
Tables for people, `--json` for scripts; a refusal of the API exits 1 with its
reason, a usage error 2, no answer or one that is not the API's 3.

It speaks HTTP with the standard library only and imports nothing of Synapse, so
that it runs on an admin's own machine (a test checks both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TextIO

from synapse_tchap_guard import __version__
from synapse_tchap_guard.units import UnitError, format_size, parse_duration

PROG = "tchap-guard-admin"
# The admin API's prefix (`admin_api.PREFIX`, which imports Synapse; a test checks
# they agree).
API_PREFIX = "/_synapse/client/tchap_guard/admin/v1"
ENV_URL = "TCHAP_GUARD_URL"
ENV_TOKEN = "TCHAP_GUARD_TOKEN"
ENV_CONFIG = "TCHAP_GUARD_CONFIG"
CONFIG_NAME = "tchap-guard-admin.yaml"
CONFIG_KEYS = ("url", "token", "timeout")
DEFAULT_TIMEOUT = 30.0
DEFAULT_PAGE = 100
MAX_PAGE = 1000  # the API's own
REASON_WIDTH = 40  # a table cuts longer reasons (`--json` has them whole)

# Exit codes.
OK = 0
REFUSED = 1  # the API answered with an error
USAGE = 2  # as argparse
UNREACHABLE = 3  # no answer, or not the API's

_CONFIG_LINE = re.compile(r"([A-Za-z_]+)\s*:\s*(.*?)\s*")
_RELATIVE = re.compile(r"[0-9]+[smhdwy]")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class CliError(Exception):
    """What stops a command, said in one message, with the exit code it warrants."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- settings ----------------------------------------------------------------------


class Settings:
    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout


def default_config_path(environ: dict[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / CONFIG_NAME


def read_config(path: Path) -> dict[str, str]:
    """The config file: a flat YAML mapping of `url`, `token` and `timeout`, one
    `key: value` a line (quotes and `#` comments allowed), read without a YAML
    library."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}", USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text", USAGE) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.strip()
        if not content or content.startswith("#") or content == "---":
            continue
        match = _CONFIG_LINE.fullmatch(content)
        if match is None:
            raise CliError(
                f"{path}, line {number}: expected `key: value`, one a line", USAGE
            )
        key, value = match.groups()
        if key not in CONFIG_KEYS:
            raise CliError(
                f"{path}, line {number}: unknown key {key!r}"
                f" (the keys are {', '.join(CONFIG_KEYS)})",
                USAGE,
            )
        values[key] = _scalar(value, f"{path}, line {number}")
    return values


def _scalar(value: str, where: str) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        rest = value[end + 1 :].strip() if end > 0 else "?"
        if end < 0 or (rest and not rest.startswith("#")):
            raise CliError(f"{where}: the quoted value does not end well", USAGE)
        return value[1:end]
    return value.split(" #", 1)[0].strip()


def resolve_settings(
    arguments: argparse.Namespace, environ: dict[str, str], warn: TextIO
) -> Settings:
    """Flags first, then the environment, then the config file."""
    explicit = arguments.config or environ.get(ENV_CONFIG)
    path = Path(explicit).expanduser() if explicit else default_config_path(environ)
    config: dict[str, str] = {}
    if explicit or path.exists():
        config = read_config(path)
        if "token" in config and _readable_by_others(path):
            print(
                f"{PROG}: warning: {path} holds an admin token and others can read"
                f" it (chmod 600 {path})",
                file=warn,
            )
    url = arguments.url or environ.get(ENV_URL) or config.get("url")
    token = arguments.token or environ.get(ENV_TOKEN) or config.get("token")
    if not url:
        raise CliError(
            f"no homeserver URL: give --url, set {ENV_URL}, or write `url:` in {path}",
            USAGE,
        )
    if not token:
        raise CliError(
            f"no admin access token: give --token, set {ENV_TOKEN}, or write"
            f" `token:` in {path}",
            USAGE,
        )
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CliError(
            f"{url!r} is not a homeserver URL (use https://matrix.example.org)",
            USAGE,
        )
    if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK:
        print(
            f"{PROG}: warning: {url} is plain HTTP: the admin token crosses the"
            " network unencrypted",
            file=warn,
        )
    timeout_text = arguments.timeout or config.get("timeout") or str(DEFAULT_TIMEOUT)
    try:
        timeout = float(timeout_text)
        if not 0 < timeout <= 3600:
            raise ValueError
    except ValueError:
        raise CliError(
            f"timeout: {timeout_text!r} is not a number of seconds (up to 3600)",
            USAGE,
        ) from None
    return Settings(url.rstrip("/"), token, timeout)


def _readable_by_others(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))


# --- the API -----------------------------------------------------------------------


class Client:
    """The admin API over urllib: each call's JSON, or a `CliError` saying why not."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def get(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, body)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        url = self._settings.url + path
        request = urllib.request.Request(url, method=method)
        request.add_header("Authorization", f"Bearer {self._settings.token}")
        request.add_header("Accept", "application/json")
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(
                request, data=data, timeout=self._settings.timeout
            ) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raise _refusal(method, path, error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CliError(
                f"cannot reach {self._settings.url}: {reason}", UNREACHABLE
            ) from None
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise CliError(
                f"{method} {path}: {status}, but not the admin API's JSON"
                " (is the guard enabled on this homeserver?)",
                UNREACHABLE,
            )
        return document


def _refusal(method: str, path: str, error: urllib.error.HTTPError) -> CliError:
    try:
        document = json.loads(error.read())
    except (ValueError, OSError):
        document = None
    if isinstance(document, dict) and "errcode" in document:
        message = f"{error.code} {document['errcode']}: {document.get('error', '')}"
        retry = error.headers.get("Retry-After") if error.headers else None
        if retry:
            message += f" (retry after {retry} s)"
        if error.code == 404 and document["errcode"] == "M_UNRECOGNIZED":
            message += " (is the guard enabled on this homeserver?)"
        return CliError(message, REFUSED)
    return CliError(
        f"{method} {path}: {error.code} {error.reason}, not from the admin API"
        " (is the URL the homeserver's, and the guard enabled on it?)",
        UNREACHABLE,
    )


def account_path(user_id: str, action: str = "") -> str:
    path = f"{API_PREFIX}/accounts/{urllib.parse.quote(user_id, safe='')}"
    return f"{path}/{action}" if action else path


def resolve_user(client: Client, raw: str) -> str:
    """A user id, or a localpart completed with the server name of the admin's own
    id (as synadm does)."""
    if raw.startswith("@"):
        return raw
    me = client.get("/_matrix/client/v3/account/whoami").get("user_id", "")
    if not isinstance(me, str) or ":" not in me:
        raise CliError("the homeserver did not say who the token belongs to", REFUSED)
    return f"@{raw}:{me.split(':', 1)[1]}"


def pages(
    client: Client,
    path: str,
    query: dict[str, str],
    limit: int | None,
    page_size: int,
    start: str | None,
) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Every block of a listing, following `next_token` (up to `limit` if given):
    the blocks, the total the API gave, and the token to go on with, if any."""
    blocks: list[dict[str, Any]] = []
    token = start
    total = None
    seen: set[str] = set()
    while True:
        wanted = page_size if limit is None else min(page_size, limit - len(blocks))
        page_query = {**query, "limit": str(wanted)}
        if token is not None:
            page_query["from"] = token
        page = client.get(path, page_query)
        blocks += page.get("blocks", [])
        total = page.get("total", total)
        token = page.get("next_token")
        if token is None or (limit is not None and len(blocks) >= limit):
            return blocks, total, token
        if token in seen:  # a server that loops would keep us here forever
            raise CliError(f"{path}: the API gave the same next_token twice", REFUSED)
        seen.add(token)


# --- times -------------------------------------------------------------------------


def parse_moment(text: str, now_ms: int) -> int:
    """A moment, in ms since the epoch, from `7d` (ago), `2026-11-23`,
    `2026-11-23T09:30`, `2026-11-23T09:30:00+01:00` (UTC when the zone is left out),
    or a number of ms since the epoch."""
    value = text.strip()
    if _RELATIVE.fullmatch(value):
        try:
            return now_ms - parse_duration(value)
        except UnitError as error:
            raise ValueError(f"{text!r} {error}") from None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        units = ", ".join(f"{n}{u}" for n, u in ((30, "m"), (12, "h"), (7, "d")))
        raise ValueError(
            f"{text!r} is not a moment: use a time ago ({units}...), a date"
            " (2026-11-23), a date and time (2026-11-23T09:30, UTC unless a zone"
            " follows) or ms since the epoch"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def shown_time(ms: object) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-"
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# --- tables ------------------------------------------------------------------------


def cell(value: object, width: int | None = None) -> str:
    """A value as one line of a terminal: what is not printable (a newline, an
    escape sequence that would drive the terminal) written as an escape, and cut
    at `width`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if not text.isprintable() or "\\" in text:
        text = "".join(_escaped(char) for char in text)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in named:
        return named[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned, two spaces apart, the headers on top; cells are `cell`s."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [
            max(width, len(value)) for width, value in zip(widths, row, strict=True)
        ]
    lines = [
        "  ".join(
            value.ljust(width) for value, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in [list(headers), *rows]
    ]
    return "\n".join(lines)


BLOCK_HEADERS = ("ID", "USER", "CONTROL", "SINCE (UTC)", "UNTIL (UTC)", "BY", "REASON")
PAST_HEADERS = (
    "ID",
    "USER",
    "CONTROL",
    "SINCE (UTC)",
    "ENDED (UTC)",
    "BLOCKED BY",
    "ENDED BY",
    "REASON",
    "END REASON",
)


def block_row(block: dict[str, Any]) -> list[str]:
    until = block.get("until_ms")
    return [
        cell(block.get("id")),
        cell(block.get("user_id")),
        cell(block.get("control")),
        shown_time(block.get("since_ms")),
        shown_time(until) if until is not None else "until lifted",
        cell(block.get("blocked_by")),
        cell(block.get("reason"), REASON_WIDTH),
    ]


def past_row(block: dict[str, Any]) -> list[str]:
    return [
        cell(block.get("id")),
        cell(block.get("user_id")),
        cell(block.get("control")),
        shown_time(block.get("since_ms")),
        shown_time(block.get("ended_ms")),
        cell(block.get("blocked_by")),
        cell(block.get("ended_by")),
        cell(block.get("reason"), REASON_WIDTH),
        cell(block.get("end_reason"), REASON_WIDTH),
    ]


def render_blocks(
    blocks: list[dict[str, Any]],
    total: int | None,
    token: str | None,
    past: bool,
) -> str:
    if not blocks:
        return "No past blocks match." if past else "No account is blocked."
    rows = [past_row(b) if past else block_row(b) for b in blocks]
    lines = [table(PAST_HEADERS if past else BLOCK_HEADERS, rows)]
    count = f"{len(blocks)} of {total}" if total is not None else str(len(blocks))
    summary = f"{count} {'past blocks' if past else 'blocked'}"
    if token is not None:
        summary += f"; more with --from {token}"
    lines.append(summary)
    return "\n".join(lines)


def render_account(view: dict[str, Any]) -> str:
    out = [cell(view.get("user_id"))]
    facts = [
        ("exempt", cell(view.get("exempt"))),
        ("blocked", cell(view.get("blocked"))),
    ]
    block = view.get("block")
    if isinstance(block, dict):
        until = block.get("until_ms")
        facts += [
            ("block", f"{cell(block.get('id'))} ({cell(block.get('control'))})"),
            ("  by", cell(block.get("blocked_by"))),
            ("  since", shown_time(block.get("since_ms")) + " UTC"),
            ("  until", shown_time(until) + " UTC" if until else "until lifted"),
            ("  reason", cell(block.get("reason"))),
        ]
    facts.append(("counters reset", cell(view.get("counters_reset") or "never")))
    label_width = max(len(label) for label, _ in facts) + 1
    out += [f"  {(label + ':').ljust(label_width)} {value}" for label, value in facts]

    rows = []
    for control, standing in (view.get("counters") or {}).items():
        if not isinstance(standing, dict):
            continue
        name = cell(control)
        for limit in standing.get("limits") or []:
            rows.append([name, "limit", *_standing(limit)])
            name = ""
        block_at = standing.get("block_at")
        if isinstance(block_at, dict):
            rows.append([name, "block at", *_standing(block_at)])
            name = ""
        step_up = standing.get("step_up")
        if isinstance(step_up, dict) and step_up.get("stepped_up"):
            until = cell(step_up.get("valid_until"))
            rows.append([name, "stepped up", "", "", f"until {until}"])
    if rows:
        out += ["", table(("CONTROL", "RULE", "WINDOW", "USED", "OF"), rows)]

    reached = view.get("reached") or []
    out += ["", f"Reached lately: {len(reached)}"]
    if reached:
        out.append(
            table(
                ("TIME (UTC)", "CONTROL", "TARGET"),
                [
                    [
                        shown_time(r.get("ts")),
                        cell(r.get("control")),
                        cell(r.get("target"), 60),
                    ]
                    for r in reached
                ],
            )
        )
    events = view.get("recent_events") or []
    out += ["", f"Recent events: {len(events)}"]
    if events:
        out.append(
            table(
                ("TIME (UTC)", "ACTION", "MESSAGE"),
                [
                    [
                        cell(_event_time(e)),
                        cell((e.get("event") or {}).get("action")),
                        cell(e.get("message"), 70),
                    ]
                    for e in events
                ],
            )
        )
    history = view.get("block_history") or []
    out += ["", f"Block history: {len(history)}"]
    if history:
        out.append(table(PAST_HEADERS, [past_row(b) for b in history]))
    return "\n".join(out)


def _standing(rule: dict[str, Any]) -> list[str]:
    """A rule's window, what the account used of it, and its maximum."""
    used = "-"
    for key, unit in (
        ("count", ""),
        ("attempts", " attempts"),
        ("refusals", " refusals"),
    ):
        if key in rule:
            used = f"{cell(rule[key])}{unit}"
            break
    of = cell(rule.get("max"))
    if "bytes" in rule:
        used += f", {_size(rule.get('bytes'))} bytes"
        of += f", {_size(rule.get('max_bytes'))} bytes"
    return [cell(rule.get("window")), used, of]


def _size(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return format_size(value)
    return cell(value)


def _event_time(event: dict[str, Any]) -> str:
    stamp = event.get("@timestamp")
    if not isinstance(stamp, str):
        return "-"
    return stamp.replace("T", " ").split(".", 1)[0]


# --- commands ----------------------------------------------------------------------


def command_list(client: Client, arguments: argparse.Namespace) -> tuple[Any, str]:
    blocks, total, token = pages(
        client,
        f"{API_PREFIX}/blocks",
        {},
        arguments.limit,
        arguments.page_size,
        arguments.start,
    )
    document: dict[str, Any] = {"blocks": blocks, "total": total}
    if token is not None:
        document["next_token"] = token
    return document, render_blocks(blocks, total, token, past=False)


def command_history(client: Client, arguments: argparse.Namespace) -> tuple[Any, str]:
    query: dict[str, str] = {}
    if arguments.user:
        query["user_id"] = resolve_user(client, arguments.user)
    if arguments.control:
        query["control"] = arguments.control
    if arguments.lifted_by:
        lifted_by = arguments.lifted_by
        if lifted_by not in ("expiry", "admin"):
            lifted_by = resolve_user(client, lifted_by)
        query["lifted_by"] = lifted_by
    for name in ("since", "until"):
        moment = getattr(arguments, name)
        if moment is not None:
            query[name] = str(moment)
    blocks, total, token = pages(
        client,
        f"{API_PREFIX}/past_blocks",
        query,
        arguments.limit,
        arguments.page_size,
        arguments.start,
    )
    document: dict[str, Any] = {"blocks": blocks, "total": total}
    if token is not None:
        document["next_token"] = token
    return document, render_blocks(blocks, total, token, past=True)


def command_show(client: Client, arguments: argparse.Namespace) -> tuple[Any, str]:
    view = client.get(account_path(resolve_user(client, arguments.user)))
    return view, render_account(view)


def command_block(client: Client, arguments: argparse.Namespace) -> tuple[Any, str]:
    user_id = resolve_user(client, arguments.user)
    body: dict[str, Any] = {"reason": arguments.reason}
    if arguments.duration is not None:
        body["duration"] = arguments.duration
    if arguments.block_admin:
        body["block_admin"] = True
    answer = client.post(account_path(user_id, "block"), body)
    block = answer.get("block") or {}
    until = block.get("until_ms")
    ending = f"until {shown_time(until)} UTC" if until else "until lifted"
    return (
        answer,
        f"{cell(user_id)} is blocked {ending} (block {cell(block.get('id'))}).",
    )


def command_unblock(client: Client, arguments: argparse.Namespace) -> tuple[Any, str]:
    user_id = resolve_user(client, arguments.user)
    answer = client.post(account_path(user_id, "unblock"), {"reason": arguments.reason})
    block = answer.get("block") or {}
    return answer, (
        f"{cell(user_id)} is unblocked (block {cell(block.get('id'))} lifted);"
        " its counters start over."
    )


Command = Callable[[Client, argparse.Namespace], tuple[Any, str]]


# --- arguments ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)", USAGE)


def _positive(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number from 1 to {limit}"
            )
        return value

    return parse


def _moment(text: str) -> int:
    try:
        return parse_moment(text, int(datetime.now(timezone.utc).timestamp() * 1000))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("say why: it goes to the audit trail")
    return text


def _common_options(parser: argparse.ArgumentParser, subcommand: bool) -> None:
    """The connection and output options, before the command or after it (after,
    they set nothing unless given, so as not to undo what was given before)."""

    def default(value: object) -> Any:
        return argparse.SUPPRESS if subcommand else value

    connection = parser.add_argument_group("connection")
    connection.add_argument(
        "--url",
        default=default(None),
        help=f"the homeserver, e.g. https://matrix.example.org (or ${ENV_URL})",
    )
    connection.add_argument(
        "--token",
        default=default(None),
        help=f"a server admin's access token (or ${ENV_TOKEN}, which no process"
        " list shows)",
    )
    connection.add_argument(
        "--config",
        default=default(None),
        help=f"the config file (or ${ENV_CONFIG}; default ~/.config/{CONFIG_NAME})",
    )
    connection.add_argument(
        "--timeout",
        default=default(None),
        help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON, for scripts",
    )


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog=PROG,
        description="The synapse-tchap-guard admin API: blocked accounts, blocks,"
        " past blocks.",
        epilog="Exit codes: 0 done, 1 the API refused (its reason is printed), 2 a"
        " usage or config error, 3 no answer, or one that is not the API's.",
    )
    _common_options(top, subcommand=False)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, help: str, **kwargs: Any) -> Any:
        sub = commands.add_parser(name, help=help, description=help, **kwargs)
        _common_options(sub, subcommand=True)
        sub.set_defaults(run=run)
        return sub

    def paging(sub: argparse.ArgumentParser) -> None:
        group = sub.add_argument_group("pages (followed until the last)")
        group.add_argument(
            "--limit", type=_positive(10**9), help="show at most this many blocks"
        )
        group.add_argument(
            "--page-size",
            type=_positive(MAX_PAGE),
            default=DEFAULT_PAGE,
            help=f"blocks asked for per request (default {DEFAULT_PAGE})",
        )
        group.add_argument(
            "--from",
            dest="start",
            metavar="TOKEN",
            help="go on from a next_token an earlier listing gave",
        )

    listing = command("list", command_list, "the accounts blocked now")
    paging(listing)

    show = command(
        "show",
        command_show,
        "one account: its block, counters, what it reached, events, block history",
    )
    show.add_argument("user", metavar="USER", help="@alice:example.org, or alice")

    block = command("block", command_block, "block an account")
    block.add_argument("user", metavar="USER", help="@alice:example.org, or alice")
    block.add_argument(
        "--reason", required=True, type=_reason, help="why (kept in the audit trail)"
    )
    block.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="30m, 24h, 7d... or 0 for until lifted (default: the configured one)",
    )
    block.add_argument(
        "--block-admin",
        action="store_true",
        help="block a server admin (who then cannot use the admin API either)",
    )

    unblock = command("unblock", command_unblock, "lift an account's block")
    unblock.add_argument("user", metavar="USER", help="@alice:example.org, or alice")
    unblock.add_argument(
        "--reason", required=True, type=_reason, help="why (kept in the audit trail)"
    )

    history = command(
        "history",
        command_history,
        "the blocks that ended (lifted or expired), the last ended first",
        aliases=["past-blocks"],
    )
    history.add_argument("--user", help="one account's")
    history.add_argument(
        "--control", help="the cause: admin, or a control (public_room_joins...)"
    )
    history.add_argument(
        "--lifted-by",
        metavar="WHO",
        help="expiry (ran their course), admin (lifted by any admin), or an admin",
    )
    history.add_argument(
        "--since",
        type=_moment,
        metavar="WHEN",
        help="in force at some time after: 7d (ago), 2026-11-23, 2026-11-23T09:30"
        " (UTC unless a zone follows)",
    )
    history.add_argument(
        "--until", type=_moment, metavar="WHEN", help="in force at some time before"
    )
    paging(history)
    return top


# --- main --------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    environ: dict[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    environ = dict(os.environ) if environ is None else environ
    try:
        arguments = parser().parse_args(argv)
        settings = resolve_settings(arguments, environ, err)
        document, text = arguments.run(Client(settings), arguments)
    except CliError as error:
        print(f"{PROG}: {error}", file=err)
        return error.code
    except KeyboardInterrupt:
        return 130
    if arguments.json:
        json.dump(document, out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        print(text, file=out)
    return OK


def run() -> NoReturn:
    """The console script."""
    sys.exit(main())
