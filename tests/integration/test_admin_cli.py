"""The admin command line, run as an admin runs it (a process of its own, the console
script or `python -m`), against a real Synapse with the guard."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from harness.homeserver import ADMIN_API, Account, Homeserver, free_port
from synapse_tchap_guard.admin_cli import shown_time

SCRIPT = Path(sys.executable).parent / "tchap-guard-admin"


class Cli:
    def __init__(self, server: Homeserver, token: str, home: Path) -> None:
        self.environ = {
            "PATH": str(SCRIPT.parent),
            "TCHAP_GUARD_URL": server.url(""),
            "TCHAP_GUARD_TOKEN": token,
            "XDG_CONFIG_HOME": str(home),  # no config file but the test's own
        }

    def run(
        self, *argv: str, module: bool = False, **environ: str
    ) -> subprocess.CompletedProcess[str]:
        program = [sys.executable, "-m", "synapse_tchap_guard"] if module else [SCRIPT]
        return subprocess.run(
            [*map(str, program), *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env={**self.environ, **environ},
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *argv: str, **kwargs: Any) -> str:
        done = self.run(*argv, **kwargs)
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        assert done.stderr == ""
        return done.stdout

    def json(self, *argv: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*argv, "--json", **kwargs))

    def fails(self, code: int, *argv: str, **kwargs: Any) -> str:
        done = self.run(*argv, **kwargs)
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        assert done.stdout == ""
        return done.stderr


@pytest.fixture
def cli(server: Homeserver, admin: Account, tmp_path: Path) -> Cli:
    return Cli(server, admin.token, tmp_path)


def test_block_list_show_unblock(server: Homeserver, admin: Account, cli: Cli) -> None:
    user = server.register()
    # A localpart is completed with the admin's server name.
    said = cli.ok("block", user.localpart, "--for", "2h", "--reason", "phishing report")
    shown = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()
    assert shown["blocked"] is True and shown["block"]["duration"] == "2h"
    assert shown["block"]["reason"] == "phishing report"
    until = shown_time(shown["block"]["until_ms"])
    assert said == (
        f"{user.user_id} is blocked until {until} UTC (block {shown['block']['id']}).\n"
    )

    listed = cli.json("list")
    (mine,) = [b for b in listed["blocks"] if b["user_id"] == user.user_id]
    assert mine["blocked_by"] == admin.user_id
    table = cli.ok("list", module=True)
    (row,) = [line for line in table.splitlines() if user.user_id in line]
    assert row.split()[2] == "admin" and "phishing report" in row
    assert table.splitlines()[0].split()[:3] == ["ID", "USER", "CONTROL"]

    text = cli.ok("show", user.user_id)
    assert text.startswith(f"{user.user_id}\n")
    assert "blocked:        yes" in text and "phishing report" in text
    assert "public_room_joins" in text  # the counters, per control
    view = cli.json("show", user.user_id)
    assert view["blocked"] is True and view["block"]["id"] == mine["id"]

    error = cli.fails(1, "block", user.user_id, "--reason", "again")
    assert error.startswith("tchap-guard-admin: 409 M_UNKNOWN: ")
    assert "already blocked" in error

    said = cli.ok("unblock", user.user_id, "--reason", "verified by phone")
    assert f"{user.user_id} is unblocked (block {mine['id']} lifted)" in said
    assert server.login(user.localpart).status_code == 200
    error = cli.fails(1, "unblock", user.user_id, "--reason", "twice")
    assert "409 M_UNKNOWN" in error and "not blocked" in error

    # What the command line did is in the audit trail under the admin's name.
    actions = [e["event"]["action"] for e in server.events_about(user.user_id)]
    assert {"admin_block", "admin_view", "admin_unblock"} <= set(actions)


def test_past_blocks_follow_next_token_page_by_page(
    server: Homeserver, admin: Account, cli: Cli
) -> None:
    start = int(time.time() * 1000)
    users = [server.register() for _ in range(5)]
    for user in users:
        cli.ok("block", user.user_id, "--reason", f"why {user.localpart}")
        cli.ok("unblock", user.user_id, "--reason", "cleared")

    def page_views() -> int:
        return sum(
            1
            for event in server.events()
            if event["event"]["action"] == "admin_view"
            and event["tchap_guard"]["endpoint"] == "past_blocks"
        )

    before = page_views()
    everything = cli.json("history", "--since", str(start), "--page-size", "2")
    assert [b["user_id"] for b in everything["blocks"]] == [
        u.user_id for u in reversed(users)
    ]
    assert everything["total"] == 5 and "next_token" not in everything
    assert page_views() - before == 3  # 2 + 2 + 1: each page asked for, and audited
    first = everything["blocks"][0]
    assert first["ended_by"] == admin.user_id and first["end_reason"] == "cleared"

    # At most three, and the token to go on with.
    some = cli.json(
        "past-blocks", "--since", str(start), "--limit", "3", "--page-size", "2"
    )
    assert [b["user_id"] for b in some["blocks"]] == [
        u.user_id for u in reversed(users[2:])
    ]
    rest = cli.json("history", "--since", str(start), "--from", some["next_token"])
    assert [b["user_id"] for b in rest["blocks"]] == [
        u.user_id for u in reversed(users[:2])
    ]

    # Filters, and a table.
    one = cli.json("history", "--user", users[1].localpart, "--lifted-by", "admin")
    assert [b["user_id"] for b in one["blocks"]] == [users[1].user_id]
    assert cli.json("history", "--since", str(start), "--lifted-by", "expiry") == {
        "blocks": [],
        "total": 0,
    }
    table = cli.ok("history", "--since", str(start), "--page-size", "2")
    lines = table.splitlines()
    assert "ENDED (UTC)" in lines[0] and lines[-1] == "5 of 5 past blocks"
    assert users[4].user_id in lines[1] and "cleared" in lines[1]
    error = cli.fails(1, "history", "--control", "nonsense")
    assert "400 M_INVALID_PARAM: control:" in error


def test_settings_from_a_config_file(
    server: Homeserver, admin: Account, cli: Cli, tmp_path: Path
) -> None:
    config = tmp_path / "tchap-guard-admin.yaml"
    config.write_text(f"url: {server.url('')}\ntoken: '{admin.token}'\ntimeout: 20\n")
    config.chmod(0o600)
    assert "blocks" in cli.json("list", TCHAP_GUARD_URL="", TCHAP_GUARD_TOKEN="")
    # The environment wins over the file, and a flag over both.
    error = cli.fails(1, "list", TCHAP_GUARD_TOKEN="not-a-token")
    assert "401 M_UNKNOWN_TOKEN" in error
    assert "blocks" in cli.json(
        "list", "--token", admin.token, TCHAP_GUARD_TOKEN="not-a-token"
    )


def test_refusals_and_an_absent_server(server: Homeserver, cli: Cli) -> None:
    user = server.register()
    error = cli.fails(1, "list", TCHAP_GUARD_TOKEN=user.token)
    assert error == "tchap-guard-admin: 403 M_FORBIDDEN: You are not a server admin\n"
    error = cli.fails(1, "show", f"@nobody:{server.server_name}")
    assert "404 M_NOT_FOUND" in error
    error = cli.fails(3, "list", TCHAP_GUARD_URL=f"http://127.0.0.1:{free_port()}")
    assert "cannot reach" in error
    error = cli.fails(2, "block", user.user_id)
    assert "--reason" in error
    assert user.whoami().status_code == 200  # none of those blocked anyone
