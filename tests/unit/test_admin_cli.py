"""The admin command line without a homeserver: what it imports, its arguments and
settings, its tables, and its HTTP against a small fake of the admin API."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import synapse_tchap_guard
from synapse_tchap_guard import admin_cli
from synapse_tchap_guard.admin_cli import (
    API_PREFIX,
    CliError,
    cell,
    parse_moment,
    parser,
    render_account,
    render_blocks,
    resolve_settings,
    table,
)

DAY = 86_400_000
NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z


# --- what it needs -------------------------------------------------------------------


def test_importing_it_imports_nothing_but_the_standard_library() -> None:
    """So that it runs on an admin's machine, where no Synapse is installed."""
    script = (
        "import sys\n"
        "import synapse_tchap_guard.admin_cli\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    outside = {
        name.split(".")[0]
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names
    }
    outside -= {"synapse_tchap_guard", "__main__"}
    # What the interpreter's site hooks load (an editable install's finder...).
    outside = {name for name in outside if not name.startswith("_")}
    assert "synapse" not in outside and "twisted" not in outside
    assert outside == set()


def test_its_prefix_is_the_admin_apis() -> None:
    from synapse_tchap_guard.admin_api import PREFIX

    assert API_PREFIX == PREFIX


# --- arguments -------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return parser().parse_args(argv)


def test_the_commands_and_their_options() -> None:
    block = parse("block", "@a:x", "--for", "24h", "--reason", "phishing")
    assert (block.command, block.user, block.duration, block.reason) == (
        "block",
        "@a:x",
        "24h",
        "phishing",
    )
    assert block.block_admin is False and block.json is False
    assert parse("block", "a", "--reason", "r").duration is None  # the configured one
    assert parse("unblock", "a", "--reason", "ok").reason == "ok"
    assert parse("show", "alice").user == "alice"
    listing = parse("list")
    assert (listing.limit, listing.page_size, listing.start) == (None, 100, None)
    past = parse(
        "past-blocks",
        "--user",
        "alice",
        "--control",
        "directory",
        "--lifted-by",
        "expiry",
        "--since",
        "2026-11-23",
        "--until",
        "2026-11-24T12:00+01:00",
        "--limit",
        "5",
        "--page-size",
        "2",
        "--from",
        "12_3",
    )
    assert past.run is admin_cli.command_history
    assert (past.user, past.control, past.lifted_by) == ("alice", "directory", "expiry")
    assert past.since == 1795392000000  # 2026-11-23T00:00Z
    assert past.until == 1795518000000  # 2026-11-24T11:00Z
    assert (past.limit, past.page_size, past.start) == (5, 2, "12_3")
    assert parse("history").run is admin_cli.command_history


def test_the_common_options_go_before_or_after_the_command() -> None:
    before = parse("--json", "--url", "https://a", "--token", "t", "list")
    after = parse("list", "--json", "--url", "https://a", "--token", "t")
    for arguments in (before, after):
        assert (arguments.json, arguments.url, arguments.token) == (
            True,
            "https://a",
            "t",
        )
    assert parse("--url", "https://a", "list", "--url", "https://b").url == "https://b"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "required"),
        (["nothing"], "invalid choice"),
        (["block", "alice"], "--reason"),
        (["block", "alice", "--reason", "  "], "say why"),
        (["unblock", "alice"], "--reason"),
        (["show"], "USER"),
        (["list", "--limit", "0"], "from 1"),
        (["list", "--limit", "-3"], "from 1"),
        (["history", "--page-size", "1001"], "from 1 to 1000"),
        (["history", "--since", "last tuesday"], "not a moment"),
        (["history", "--until", "99999y"], "too long"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert admin_cli.main(argv, environ={}) == admin_cli.USAGE
    error = capsys.readouterr().err
    assert error.startswith("tchap-guard-admin: ") and words in error, error


def test_moments() -> None:
    assert parse_moment("7d", NOW) == NOW - 7 * DAY
    assert parse_moment("90m", NOW) == NOW - 90 * 60_000
    assert parse_moment("2027-01-15", NOW) == NOW - 8 * 3_600_000
    assert parse_moment("2027-01-15T08:00", NOW) == NOW
    assert parse_moment("2027-01-15T09:00:00+01:00", NOW) == NOW
    assert parse_moment("2027-01-15T08:00:00Z", NOW) == NOW
    assert parse_moment(str(NOW), NOW) == NOW
    for bad in ("yesterday", "7 days", "-1d", "2027-13-01", ""):
        with pytest.raises(ValueError, match="not a moment"):
            parse_moment(bad, NOW)


# --- settings --------------------------------------------------------------------------


def settings(
    argv: list[str], environ: dict[str, str], warnings: io.StringIO | None = None
) -> admin_cli.Settings:
    return resolve_settings(
        parse(*argv, "list"),
        environ,
        warnings if warnings is not None else io.StringIO(),
    )


def config_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tchap-guard-admin.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_flags_win_over_the_environment_which_wins_over_the_file(
    tmp_path: Path,
) -> None:
    path = config_file(
        tmp_path,
        "# written by hand\n"
        "url: https://file.example.org/\n"
        "token: 'file token'  # quoted\n"
        'timeout: "5"\n',
    )
    home = {"XDG_CONFIG_HOME": str(tmp_path)}
    from_file = settings([], home)
    assert (from_file.url, from_file.token, from_file.timeout) == (
        "https://file.example.org",
        "file token",
        5.0,
    )
    environ = {
        **home,
        "TCHAP_GUARD_URL": "https://env.example.org",
        "TCHAP_GUARD_TOKEN": "e",
    }
    from_env = settings([], environ)
    assert (from_env.url, from_env.token) == ("https://env.example.org", "e")
    from_flags = settings(
        ["--url", "https://flag.example.org", "--token", "f"], environ
    )
    assert (from_flags.url, from_flags.token) == ("https://flag.example.org", "f")
    # Named by flag or environment, the file need not be in the default place.
    elsewhere = {"TCHAP_GUARD_CONFIG": str(path)}
    assert settings([], elsewhere).token == "file token"
    assert settings(["--config", str(path)], {}).token == "file token"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("url https://x\n", "expected `key: value`"),
        ("user: admin\n", "unknown key 'user'"),
        ("token: 'unterminated\n", "does not end well"),
        ("url: https://x\ntoken: t\ntimeout: soon\n", "not a number of seconds"),
    ],
)
def test_a_bad_config_file_says_where(tmp_path: Path, text: str, words: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(CliError, match=words) as raised:
        settings(["--config", str(path)], {})
    assert raised.value.code == admin_cli.USAGE


def test_without_url_or_token_it_says_where_to_put_them(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(CliError, match="--url, set TCHAP_GUARD_URL, or write `url:`"):
        settings([], environ)
    with pytest.raises(CliError, match="--token, set TCHAP_GUARD_TOKEN"):
        settings(["--url", "https://x.org"], environ)
    with pytest.raises(CliError, match="not a homeserver URL"):
        settings(["--url", "matrix.example.org", "--token", "t"], environ)
    with pytest.raises(CliError, match="cannot read"):
        settings(["--config", str(tmp_path / "missing.yaml")], environ)


def test_it_warns_of_a_token_others_can_read_or_sent_in_clear(tmp_path: Path) -> None:
    path = config_file(tmp_path, "url: https://x.org\ntoken: t\n", mode=0o644)
    warnings = io.StringIO()
    settings(["--config", str(path)], {}, warnings)
    assert f"chmod 600 {path}" in warnings.getvalue()
    path.chmod(0o600)
    warnings = io.StringIO()
    settings(["--config", str(path), "--url", "http://localhost:8008"], {}, warnings)
    assert warnings.getvalue() == ""
    settings(
        ["--config", str(path), "--url", "http://matrix.example.org"], {}, warnings
    )
    assert "plain HTTP" in warnings.getvalue()


# --- tables ----------------------------------------------------------------------------


def test_a_table_aligns_its_columns() -> None:
    assert table(("ID", "USER"), [["1", "@a:x"], ["12", "@bob:x"]]).splitlines() == [
        "ID  USER",
        "1   @a:x",
        "12  @bob:x",
    ]


def test_a_cell_cannot_drive_the_terminal_nor_break_the_line() -> None:
    assert cell("line one\nline two") == "line one\\nline two"
    assert cell("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07"
    assert cell("a\\nb") == "a\\\\nb"  # a backslash that was there stays tellable
    assert cell("\u202eevil") == "\\u202eevil"
    assert cell("x" * 50, 10) == "x" * 9 + "…"
    assert (cell(None), cell(True), cell(False), cell(3)) == ("-", "yes", "no", "3")


def block(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": n,
        "user_id": f"@user{n}:example.org",
        "control": "admin",
        "reason": "phishing report",
        "blocked_by": "@admin:example.org",
        "since_ms": NOW,
        "until_ms": NOW + DAY,
        **extra,
    }


def test_blocks_in_force_as_a_table() -> None:
    text = render_blocks(
        [block(2), block(1, until_ms=None, reason="r\n" * 40)], 7, "1", past=False
    )
    lines = text.splitlines()
    assert lines[0].split() == [
        "ID",
        "USER",
        "CONTROL",
        "SINCE",
        "(UTC)",
        "UNTIL",
        "(UTC)",
        "BY",
        "REASON",
    ]
    assert lines[1].split()[:5] == [
        "2",
        "@user2:example.org",
        "admin",
        "2027-01-15",
        "08:00:00",
    ]
    assert "2027-01-16 08:00:00" in lines[1]
    assert "until lifted" in lines[2]
    reason = lines[2].split("@admin:example.org  ", 1)[1]
    assert reason == ("r\\n" * 40)[:39] + "…"  # on one line, cut
    assert lines[3] == "2 of 7 blocked; more with --from 1"
    assert render_blocks([], 0, None, past=False) == "No account is blocked."


def test_past_blocks_as_a_table() -> None:
    ended = block(
        3,
        ended_ms=NOW + 3_600_000,
        ended_by="expiry",
        end_reason=None,
    )
    text = render_blocks([ended], 1, None, past=True)
    header, row, summary = text.splitlines()
    assert "ENDED (UTC)" in header and "END REASON" in header
    assert "2027-01-15 09:00:00" in row and "expiry" in row
    assert summary == "1 of 1 past blocks"
    assert render_blocks([], 0, None, past=True) == "No past blocks match."


def test_an_account_view_as_text() -> None:
    view = {
        "user_id": "@camille:example.org",
        "exempt": False,
        "blocked": True,
        "block": block(1, control="public_room_joins"),
        "counters_reset": None,
        "counters": {
            "public_room_joins": {
                "limits": [
                    {"window": "1h", "window_ms": 3600000, "count": 10, "max": 10},
                    {"window": "1d", "window_ms": DAY, "count": 12, "max": 30},
                ],
                "block_at": {
                    "window": "1d",
                    "window_ms": DAY,
                    "attempts": 3,
                    "max": 60,
                },
            },
            "media_downloads": {
                "limits": [
                    {
                        "window": "1h",
                        "window_ms": 3600000,
                        "count": 1,
                        "max": 100,
                        "bytes": 2048,
                        "max_bytes": 1073741824,
                    }
                ],
                "block_at": None,
            },
        },
        "reached": [
            {
                "time": "2027-01-15T08:00:00.000Z",
                "ts": NOW,
                "control": "public_room_joins",
                "session": None,
                "target": "!room:example.org",
            }
        ],
        "recent_events": [
            {
                "@timestamp": "2027-01-15T08:00:01.000Z",
                "message": "@admin:example.org viewed @camille:example.org",
                "event": {"action": "admin_view"},
            }
        ],
        "block_history": [block(1, control="public_room_joins")],
    }
    text = render_account(view)
    assert text.startswith("@camille:example.org\n  exempt:")
    assert "  blocked:        yes" in text
    assert "  reason:       phishing report" in text
    assert "counters reset: never" in text
    lines = text.splitlines()
    assert any(
        line.split() == ["public_room_joins", "limit", "1h", "10", "10"]
        for line in lines
    )
    assert any(
        line.split() == ["block", "at", "1d", "3", "attempts", "60"] for line in lines
    )
    assert any(
        line.split()
        == [
            "media_downloads",
            "limit",
            "1h",
            "1,",
            "2K",
            "bytes",
            "100,",
            "1G",
            "bytes",
        ]
        for line in lines
    )
    assert "Reached lately: 1" in text and "!room:example.org" in text
    assert "Recent events: 1" in text and "2027-01-15 08:00:01  admin_view" in text
    assert "Block history: 1" in text


# --- HTTP, against a fake admin API ---------------------------------------------------


class FakeApi:
    """The admin API's answers, set by each test; what it was asked."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any, dict[str, str]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.past = [
            block(n, ended_ms=NOW + n, ended_by="expiry") for n in range(7, 0, -1)
        ]

    def answer(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/_matrix/client/v3/account/whoami":
            return 200, {"user_id": "@admin:example.org"}, {}
        if (method, path) in self.answers:
            return self.answers[method, path]
        if path == f"{API_PREFIX}/past_blocks":
            start = int(query["from"]) if "from" in query else 0
            limit = int(query.get("limit", "100"))
            page: dict[str, Any] = {
                "blocks": self.past[start : start + limit],
                "total": len(self.past),
            }
            if start + limit < len(self.past):
                page["next_token"] = str(start + limit)
            return 200, page, {}
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, {}


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            body = json.loads(raw) if raw else None
            fake.requests.append(
                {
                    "method": self.command,
                    "path": unquote(parts.path),
                    "raw_path": parts.path,
                    "query": query,
                    "body": body,
                    "authorization": self.headers.get("Authorization"),
                }
            )
            status, document, headers = fake.answer(
                self.command, unquote(parts.path), query, body
            )
            data = (
                document
                if isinstance(document, bytes)
                else json.dumps(document).encode()
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def cli(url: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = {
        "TCHAP_GUARD_URL": url,
        "TCHAP_GUARD_TOKEN": "secret",
        "XDG_CONFIG_HOME": "/nonexistent",
    }
    code = admin_cli.main(list(argv), environ=environ, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_it_follows_next_token_to_the_last_page(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    code, out, err = cli(url, "history", "--page-size", "3", "--json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert [b["id"] for b in document["blocks"]] == [7, 6, 5, 4, 3, 2, 1]
    assert "next_token" not in document and document["total"] == 7
    assert [r["query"] for r in fake.requests] == [
        {"limit": "3"},
        {"limit": "3", "from": "3"},
        {"limit": "3", "from": "6"},
    ]
    assert {r["authorization"] for r in fake.requests} == {"Bearer secret"}


def test_limit_stops_early_and_gives_the_token_to_go_on(
    api: tuple[FakeApi, str],
) -> None:
    fake, url = api
    code, out, _ = cli(url, "history", "--limit", "4", "--page-size", "3", "--json")
    document = json.loads(out)
    assert code == 0
    assert [b["id"] for b in document["blocks"]] == [7, 6, 5, 4]
    assert document["next_token"] == "4"
    assert [r["query"]["limit"] for r in fake.requests] == ["3", "1"]
    code, out, _ = cli(url, "history", "--from", "4")
    assert code == 0 and out.splitlines()[-1] == "3 of 7 past blocks"


def test_filters_reach_the_api_and_a_localpart_is_completed(
    api: tuple[FakeApi, str],
) -> None:
    fake, url = api
    code, _, _ = cli(
        url,
        "history",
        "--user",
        "camille",
        "--lifted-by",
        "maxime",
        "--control",
        "admin",
        "--since",
        str(NOW),
        "--until",
        "2027-01-16",
    )
    assert code == 0
    assert fake.requests[-1]["query"] == {
        "user_id": "@camille:example.org",
        "lifted_by": "@maxime:example.org",
        "control": "admin",
        "since": str(NOW),
        "until": str(NOW + 16 * 3_600_000),
        "limit": "100",
    }


def test_block_and_unblock_send_the_reason_and_duration(
    api: tuple[FakeApi, str],
) -> None:
    fake, url = api
    path = f"{API_PREFIX}/accounts/@a/b:example.org"
    fake.answers["POST", f"{path}/block"] = (
        200,
        {"user_id": "@a/b:example.org", "blocked": True, "block": block(9)},
        {},
    )
    code, out, _ = cli(
        url,
        "block",
        "@a/b:example.org",
        "--for",
        "24h",
        "--reason",
        "why",
        "--block-admin",
    )
    assert code == 0
    assert (
        out == "@a/b:example.org is blocked until 2027-01-16 08:00:00 UTC (block 9).\n"
    )
    request = fake.requests[-1]
    assert request["raw_path"] == f"{API_PREFIX}/accounts/%40a%2Fb%3Aexample.org/block"
    assert request["body"] == {"reason": "why", "duration": "24h", "block_admin": True}
    fake.answers["POST", f"{path}/unblock"] = (
        200,
        {"blocked": False, "block": block(9, ended_by="@admin:example.org")},
        {},
    )
    code, out, _ = cli(url, "unblock", "@a/b:example.org", "--reason", "ok")
    assert code == 0 and "unblocked (block 9 lifted)" in out
    assert fake.requests[-1]["body"] == {"reason": "ok"}


def test_a_refusal_exits_1_with_the_apis_reason(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    path = f"{API_PREFIX}/accounts/@a:example.org/block"
    fake.answers["POST", path] = (
        409,
        {
            "errcode": "M_UNKNOWN",
            "error": "@a:example.org is already blocked (block 3)",
        },
        {},
    )
    code, out, err = cli(url, "block", "@a:example.org", "--reason", "r")
    assert (code, out) == (1, "")
    assert err == (
        "tchap-guard-admin: 409 M_UNKNOWN: @a:example.org is already blocked (block 3)\n"
    )
    fake.answers["GET", f"{API_PREFIX}/blocks"] = (
        503,
        {"errcode": "M_UNKNOWN", "error": "The guard's tables cannot answer right now"},
        {"Retry-After": "5"},
    )
    code, _, err = cli(url, "list")
    assert code == 1 and "503 M_UNKNOWN" in err and "(retry after 5 s)" in err


def test_an_answer_not_from_the_api_exits_3(api: tuple[FakeApi, str]) -> None:
    fake, url = api
    fake.answers["GET", f"{API_PREFIX}/blocks"] = (502, b"<html>Bad Gateway</html>", {})
    code, _, err = cli(url, "list")
    assert code == admin_cli.UNREACHABLE
    assert "502 Bad Gateway, not from the admin API" in err
    fake.answers["GET", f"{API_PREFIX}/blocks"] = (404, b"<html>Not Found</html>", {})
    code, _, err = cli(url, "list")
    assert (
        code == admin_cli.UNREACHABLE and "404 Not Found, not from the admin API" in err
    )
    fake.answers["GET", f"{API_PREFIX}/blocks"] = (
        200,
        b"<html>a login page</html>",
        {},
    )
    code, _, err = cli(url, "list")
    assert code == admin_cli.UNREACHABLE and "not the admin API's JSON" in err
    code, _, err = cli(url, "show", "@a:example.org")  # the fake knows no accounts
    assert code == 1 and "is the guard enabled on this homeserver?" in err


def test_a_homeserver_that_does_not_answer_exits_3() -> None:
    code, _, err = cli("http://127.0.0.1:9", "list")
    assert code == admin_cli.UNREACHABLE
    assert err.startswith("tchap-guard-admin: cannot reach http://127.0.0.1:9:")


def test_the_module_runs_as_a_program_where_synapse_cannot_be_imported() -> None:
    """`python -m synapse_tchap_guard`, with Synapse, Twisted and attrs unimportable,
    as on a machine that has none of them."""
    script = (
        "import runpy, sys\n"
        "sys.modules.update(synapse=None, twisted=None, attr=None, yaml=None)\n"
        "sys.argv = ['tchap-guard-admin', '--version']\n"
        "runpy.run_module('synapse_tchap_guard', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    expected = f"tchap-guard-admin {synapse_tchap_guard.__version__}"
    assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr
