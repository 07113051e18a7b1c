"""The admin API against a few hundred generated hostile requests, on a real Synapse:
whatever the ids, reasons, durations, pagination, filters, bodies and URL encodings,
no answer is a 5xx.

The generator is seeded, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import collections
import http.client
import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import attr

from harness.homeserver import ADMIN_API, Account, Homeserver

SEED = 13
CASES = 400
# The past blocks' parameters, and one they ignore as Synapse ignores what it does
# not know.
PAST_PARAMETERS = [
    "limit",
    "from",
    "user_id",
    "control",
    "lifted_by",
    "since",
    "until",
    "other",
]
# Pieces that have broken a parser, a database column or a log line somewhere.
HOSTILE = [
    "\x00",
    "\n",
    "\r\n",
    "\t",
    "\x7f",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\ud800",
    "\udfff",
    "é",
    "\U0001d54f",  # outside the BMP
    "\\",
    '"',
    "'",
    "%",
    "%00",
    "%2F",
    "/",
    ":",
    "@",
    "!",
    "#",
    "?",
    " ",
    "{}",
    '{"a":1}',
    "<script>",
    "²",
    "٣",
]


@attr.frozen
class Case:
    number: int
    method: str
    path: str  # as sent: percent-encoded ASCII, oddities included
    body: bytes | None

    def __str__(self) -> str:
        shown = self.body[:120] if self.body is not None else None
        return f"case {self.number}: {self.method} {self.path[:200]} body={shown!r}"


class Generator:
    def __init__(self, seed: int, users: list[str]) -> None:
        self.rng = random.Random(seed)
        self.users = users

    def text(self, longest: int = 40, huge: bool = True) -> str:
        """Hostile text; `huge` lets it be thousands of characters long (not in a URL:
        Twisted drops a request line over 16 KB before Synapse sees it)."""
        rng = self.rng
        if huge and rng.random() < 0.05:
            return rng.choice(HOSTILE) * rng.choice([1000, 5000])
        pieces = [
            rng.choice(HOSTILE) if rng.random() < 0.4 else rng.choice("abcXYZ019 .-_")
            for _ in range(rng.randint(0, longest))
        ]
        return "".join(pieces)

    def user_id(self) -> str:
        rng = self.rng
        real = rng.choice(self.users)
        local, server = real[1:].split(":", 1)
        if rng.random() < 0.5:
            return real
        return rng.choice(
            [
                f"@{local}{rng.choice(HOSTILE)}:{server}",
                f"@{self.text(10, huge=False)}:{server}",
                f"@{local}:{self.text(10, huge=False)}",
                f"@{local}:elsewhere.example",
                "@" + "a" * rng.choice([254, 256, 5000]) + ":localhost",
                self.text(20, huge=False),
                "",
                "@",
                ":",
                "@:",
                f"{real}/block",
            ]
        )

    def segment(self, value: str) -> str:
        """One path segment, percent-encoded as a client (or a fuzzer) would."""
        rng = self.rng
        raw = value.encode("utf-8", "surrogatepass")
        choice = rng.random()
        if choice < 0.75:
            return quote(raw, safe="")
        if choice < 0.82:
            return quote(quote(raw, safe=""), safe="")  # encoded twice
        if choice < 0.9:
            return quote(raw, safe="@:!")  # left as browsers leave them
        if choice < 0.95:
            return quote(raw, safe="") + rng.choice(["%", "%z", "%zz", "%FF", "%C0%80"])
        return rng.choice(["%ED%A0%80", "%FF%FE", "%00", "..", ".", "%2e%2e"])

    def number(self) -> str:
        return self.rng.choice(
            [
                "9" * 5000,
                "1" * 19,
                "1" * 20,
                "-1",
                "0",
                "1",
                "1000",
                "1001",
                "2.5",
                "1e3",
                "abc",
                "",
                "%FF",
                "%C2%B2",
                "%D9%A3",
                "%205",
                "0x10",
                "00000000000000000000000001",
            ]
        )

    def query(self) -> str:
        rng = self.rng
        params = [
            f"{rng.choice(['limit', 'from', 'limit', 'from', 'other'])}={self.number()}"
            for _ in range(rng.randint(0, 3))
        ]
        return ("?" + "&".join(params)) if params else ""

    def past_query(self) -> str:
        """The past blocks' filters and pagination, each valid or not."""
        rng = self.rng
        params = []
        for _ in range(rng.randint(0, 4)):
            name = rng.choice(PAST_PARAMETERS)
            params.append(f"{name}={self.past_value(name)}")
        return ("?" + "&".join(params)) if params else ""

    def past_value(self, name: str) -> str:
        rng = self.rng
        if name in ("limit", "since", "until", "other"):
            return self.number()
        if name == "from":
            return rng.choice(
                [
                    "1800000000000_1",
                    "0_0",
                    "_",
                    "1_",
                    "_1",
                    "1_2_3",
                    "-1_1",
                    "9" * 19 + "_" + "9" * 19,
                    "9" * 30 + "_1",
                    self.number(),
                    quote(self.text(10, huge=False).encode("utf-8", "surrogatepass")),
                ]
            )
        if name == "control":
            value = rng.choice(["admin", "directory", "media_downloads", self.text(8)])
        elif name == "lifted_by":
            value = rng.choice(["expiry", "admin", self.user_id(), self.text(8)])
        else:
            value = self.user_id()
        return self.segment(value)

    def value(self) -> Any:
        rng = self.rng
        return rng.choice(
            [
                self.text(),
                self.text(),
                "",
                "   ",
                "x" * 1001,
                0,
                -1,
                10**30,
                2.5,
                1e300,
                True,
                None,
                [],
                ["a"],
                {},
                {"reason": "nested"},
            ]
        )

    def duration(self) -> Any:
        return self.rng.choice(
            [
                "9" * 5000,
                "9" * 5000 + "d",
                "1h",
                "0",
                0,
                "-1",
                -1,
                "1.5h",
                1.5,
                "1e30",
                1e30,
                10**30,
                True,
                None,
                [],
                {},
                "1x",
                "100y",
                "101y",
                "²d",
                " 1h ",
                self.text(10),
            ]
        )

    def body(self) -> bytes | None:
        rng = self.rng
        choice = rng.random()
        if choice < 0.8:
            document: dict[str, Any] = {
                "reason": rng.choice(["phishing report", self.text()])
                if rng.random() < 0.8
                else self.value()
            }
            if rng.random() < 0.5:
                document["duration"] = self.duration()
            if rng.random() < 0.3:
                document["block_admin"] = rng.choice([True, False, self.value()])
            if rng.random() < 0.2:
                document[self.text(8)] = self.value()
            return json.dumps(document).encode("ascii")
        return rng.choice(
            [
                None,
                b"",
                b"{not json",
                b"[]",
                b'"a string"',
                b"null",
                b"1e999999",
                b'{"reason": "\\ud800 lone"}',
                b'{"reason": "nul \\u0000 here"}',
                b'{"reason": NaN}',
                b'{"reason": "a", "reason": {"b": []}}',
                b"\xff\xfe\x00\x00",
                b"[" * 10_000 + b"]" * 10_000,
                json.dumps({"reason": "x" * 2_000_000}).encode("ascii"),
            ]
        )

    def case(self, number: int) -> Case:
        rng = self.rng
        account = self.segment(self.user_id())
        method = rng.choices(["GET", "POST", "PUT", "DELETE"], [40, 50, 5, 5])[0]
        if method == "GET":
            path = rng.choices(
                [
                    "/blocks",
                    "/past_blocks",
                    f"/accounts/{account}",
                    self.odd_path(account),
                ],
                [25, 25, 40, 10],
            )[0]
        else:
            path = rng.choices(
                [
                    f"/accounts/{account}/block",
                    f"/accounts/{account}/unblock",
                    self.odd_path(account),
                ],
                [60, 30, 10],
            )[0]
        body = self.body() if method in ("POST", "PUT") else None
        query = self.past_query() if path == "/past_blocks" else self.query()
        return Case(number, method, f"{ADMIN_API}{path}{query}", body)

    def odd_path(self, account: str) -> str:
        return self.rng.choice(
            [
                f"/accounts/{account}/{self.segment(self.text(5, huge=False))}",
                f"/{self.segment(self.text(8, huge=False))}",
                "/accounts/",
                "//blocks",
                "/blocks/",
                "",
            ]
        )

    def cases(self, count: int) -> Iterator[Case]:
        for number in range(count):
            yield self.case(number)


def send(server: Homeserver, token: str, case: Case) -> tuple[int, bytes, str | None]:
    """Send exactly these bytes (an HTTP library would tidy the path up); returns
    the status, the body and `Retry-After`."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        if case.body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(case.method, case.path, body=case.body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Retry-After")
    except Exception as error:
        raise AssertionError(f"{case}: {error}") from error
    finally:
        connection.close()


def users_to_act_on(server: Homeserver, admin: Account) -> list[str]:
    users = [server.register().user_id for _ in range(6)]
    return [*users, server.register(admin=True).user_id, admin.user_id]


def test_no_generated_input_gets_a_5xx(server: Homeserver, admin: Account) -> None:
    failures = []
    statuses = []
    for case in Generator(SEED, users_to_act_on(server, admin)).cases(CASES):
        status, body, _ = send(server, admin.token, case)
        statuses.append(status)
        if status >= 500:
            failures.append(f"{case} -> {status} {body[:200]!r}")
    assert failures == []
    # The cases reached every kind of answer, not only one refusal: some got past
    # every check and blocked or unblocked someone.
    answers = collections.Counter(statuses)
    assert {200, 400, 404, 405} <= set(answers)
    assert answers[200] >= 20
    # And the admin API still answers afterwards.
    assert admin.get(f"{ADMIN_API}/blocks").status_code == 200


def test_no_generated_past_blocks_query_gets_a_5xx(
    server: Homeserver, admin: Account
) -> None:
    """The filters and tokens of the past blocks, on their own: each a 200 or a 400
    with `M_INVALID_PARAM`, and some of each."""
    generator = Generator(SEED + 2, users_to_act_on(server, admin))
    answers: collections.Counter[tuple[int, str | None]] = collections.Counter()
    failures = []
    for number in range(CASES // 2):
        case = Case(
            number, "GET", f"{ADMIN_API}/past_blocks{generator.past_query()}", None
        )
        status, body, _ = send(server, admin.token, case)
        errcode = json.loads(body).get("errcode") if status != 200 else None
        answers[status, errcode] += 1
        if (status, errcode) not in ((200, None), (400, "M_INVALID_PARAM")):
            failures.append(f"{case} -> {status} {body[:200]!r}")
    assert failures == []
    assert answers[200, None] >= 20 and answers[400, "M_INVALID_PARAM"] >= 20


def test_while_the_tables_are_cut_the_only_5xx_is_a_503_with_retry_after(
    server: Homeserver, admin: Account
) -> None:
    users = users_to_act_on(server, admin)
    tables = ("tchap_guard_blocks", "tchap_guard_counts", "tchap_guard_accounts")
    for table in tables:
        server.sql(f"ALTER TABLE {table} RENAME TO {table}_away")
    failures = []
    statuses = []
    try:
        for case in Generator(SEED + 1, users).cases(CASES // 4):
            status, body, retry_after = send(server, admin.token, case)
            statuses.append(status)
            if status >= 500 and (status, retry_after) != (503, "5"):
                failures.append(f"{case} -> {status} {body[:200]!r}")
    finally:
        for table in tables:
            server.sql(f"ALTER TABLE {table}_away RENAME TO {table}")
    assert failures == []
    assert 503 in statuses  # the cut was felt
