"""A real Synapse process with the guard, configured from example_homeserver.yaml.

Each `Homeserver` runs in its own directory, on its own port, on SQLite or on a fresh
PostgreSQL database, and is driven over HTTP exactly as a client would drive it. It
sends mail to the SMTP server it is given (`smtp_port`, see harness/mail.py); without
one, it has no email settings and sends none.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import itertools
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "example_homeserver.yaml"
EXAMPLE_LOG_CONFIG = REPO / "example_log_config.yaml"
EVENTS_FILE = "tchap_guard_events.log"
PASSWORD = "correct horse battery staple"
# The guard's endpoints, as a client knows them (written out: they are the contract).
ADMIN_API = "/_synapse/client/tchap_guard/admin/v1"
STEP_UP = "/_synapse/client/tchap_guard/v1/step_up"
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}

# Synapse's own rate limits would get in the way of tests that act fast on purpose.
_GENEROUS = {"per_second": 1000, "burst_count": 1000}
TEST_SETTINGS: dict[str, Any] = {
    "bcrypt_rounds": 4,
    "rc_login": {
        "address": _GENEROUS,
        "account": _GENEROUS,
        "failed_attempts": _GENEROUS,
    },
    "rc_joins": {"local": _GENEROUS, "remote": _GENEROUS},
    "rc_joins_per_room": _GENEROUS,
    "rc_message": _GENEROUS,
    "rc_registration": _GENEROUS,
    "rc_invites": {
        "per_room": _GENEROUS,
        "per_user": _GENEROUS,
        "per_issuer": _GENEROUS,
    },
    "rc_user_directory": _GENEROUS,
    "rc_media_create": _GENEROUS,
    "rc_room_creation": _GENEROUS,
    "rc_profile": _GENEROUS,
}

_names = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed_certificate(host: str) -> tuple[bytes, bytes]:
    """A certificate and key in PEM for `host`, for federation between local servers."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A real PNG image, noisy enough not to compress to nothing."""
    import io
    import random

    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    image.putdata(
        [tuple(rng.randrange(256) for _ in range(3)) for _ in range(width * height)]
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}x{uuid.uuid4().hex[:6]}"


def postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(dbname="postgres", connect_timeout=3, **POSTGRES).close()
    except Exception:
        return False
    return True


def redis_available() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=3).close()
    except OSError:
        return False
    return True


def create_postgres_database() -> str:
    """A fresh database as Synapse wants it (C collation); returns its name."""
    import psycopg2

    name = f"tchap_guard_test_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(dbname="postgres", **POSTGRES)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        )
    connection.close()
    return name


def drop_postgres_database(name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(dbname="postgres", **POSTGRES)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    connection.close()


def assert_wait(retry_after_ms: float, expected_ms: float, window_ms: int) -> None:
    """A refusal's wait, against the exact one (`expected_ms`: until the oldest
    request leaves the window): the guard's windows let a request go between the
    window and a bucket of it (a sixtieth) later, never earlier; 400 ms for the test's
    own timing."""
    from synapse_tchap_guard.windows import Window

    window = Window(window_ms)
    late = window.reach - window_ms + window.width
    assert expected_ms - 400 <= retry_after_ms <= expected_ms + late + 400, (
        retry_after_ms,
        expected_ms,
        late,
    )


def wait_until(
    predicate: Callable[[], Any], timeout: float = 15, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Account:
    def __init__(self, server: Homeserver, user_id: str, token: str, device: str):
        self.server = server
        self.user_id = user_id
        self.localpart = user_id[1:].split(":", 1)[0]
        self.token = token
        self.device_id = device
        # What its client has seen of /sync so far.
        self._since: str | None = None
        self._notice_rooms: set[str] = set()
        self._notices: list[dict[str, Any]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.server.http.request(
            method, self.server.url(path), headers=headers, timeout=30, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json={} if body is None else body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, json={} if body is None else body, **kwargs)

    # --- a few client actions, as a Matrix client performs them ---------------

    def create_room(self, public: bool = True, **extra: Any) -> str:
        body = {"preset": "public_chat" if public else "private_chat", **extra}
        if public:
            body.setdefault("visibility", "public")
        response = self.post("/_matrix/client/v3/createRoom", body)
        assert response.status_code == 200, response.text
        room_id: str = response.json()["room_id"]
        return room_id

    def join(self, room_id: str) -> requests.Response:
        return self.post(f"/_matrix/client/v3/join/{quote(room_id)}")

    def invite(self, room_id: str, user_id: str) -> None:
        response = self.post(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": user_id}
        )
        assert response.status_code == 200, response.text

    def upload(
        self, data: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        response = self.request(
            "POST",
            "/_matrix/media/v3/upload",
            data=data,
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 200, response.text
        mxc: str = response.json()["content_uri"]
        return mxc

    def download(self, mxc: str) -> requests.Response:
        server_name, media_id = mxc.removeprefix("mxc://").split("/", 1)
        return self.get(f"/_matrix/client/v1/media/download/{server_name}/{media_id}")

    def thumbnail(self, mxc: str, size: int = 32) -> requests.Response:
        server_name, media_id = mxc.removeprefix("mxc://").split("/", 1)
        return self.get(
            f"/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}"
            f"?width={size}&height={size}&method=scale"
        )

    def whoami(self) -> requests.Response:
        return self.get("/_matrix/client/v3/account/whoami")

    def logged_out(self) -> bool:
        """Whether this session's access token is gone (a block ends sessions soon after)."""
        response = self.whoami()
        return (
            response.status_code == 401
            and response.json()["errcode"] == "M_UNKNOWN_TOKEN"
        )

    def sync(self, since: str | None = None, timeout_ms: int = 0) -> dict[str, Any]:
        query = f"?timeout={timeout_ms}" + (f"&since={quote(since)}" if since else "")
        response = self.get(f"/_matrix/client/v3/sync{query}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def server_notices(self) -> list[dict[str, Any]]:
        """The messages of the account's server notices room so far, as its client
        gets them from /sync (initial, then incremental); it accepts the room's
        invitation, as a client offers to."""
        body = self.sync(self._since)
        self._since = body["next_batch"]
        rooms = body.get("rooms", {})
        for room_id in rooms.get("invite", {}):
            assert self.join(room_id).status_code == 200
        for room_id, room in rooms.get("join", {}).items():
            for event in room.get("account_data", {}).get("events", []):
                if event["type"] == "m.tag" and "m.server_notice" in event[
                    "content"
                ].get("tags", {}):
                    self._notice_rooms.add(room_id)
            if room_id in self._notice_rooms:
                self._notices += [
                    event["content"]
                    for event in room["timeline"]["events"]
                    if event["type"] == "m.room.message"
                ]
        return list(self._notices)

    def set_displayname(self, name: str) -> requests.Response:
        return self.put(
            f"/_matrix/client/v3/profile/{quote(self.user_id)}/displayname",
            {"displayname": name},
        )


def counters(admin: Account, user: Account, control: str) -> dict[str, Any]:
    """An account's standing against one control, as the admin API shows it (which
    first writes what the process counted in memory)."""
    response = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}")
    assert response.status_code == 200, response.text
    standing: dict[str, Any] = response.json()["counters"][control]
    return standing


def window_count(admin: Account, user: Account, control: str, index: int) -> int:
    """How much of its `index`-th limit's window an account has used, now."""
    return int(counters(admin, user, control)["limits"][index]["count"])


class Homeserver:
    def __init__(
        self,
        workdir: Path,
        *,
        database: str = "sqlite",
        guard: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        with_workers: bool = False,
        federation: bool = False,
        metrics: bool = False,
        cpus: set[int] | None = None,
        email: dict[str, Any] | None = None,
    ) -> None:
        self.cpus = cpus
        self.workdir = workdir
        self.database = database
        self.port = free_port()
        self.federation_port = free_port() if federation else None
        self.replication_port = free_port() if with_workers else None
        self.metrics_port = free_port() if metrics else None
        self.workers: list[Worker] = []
        self.http = requests.Session()
        # Room for the concurrent requests some tests send.
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
        self.postgres_name: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = self._config(guard, settings or {})
        # Synapse's `email:` section (`MailServer.settings()`), or no mail at all.
        if email is None:
            self.config.pop("email", None)
        else:
            self.config["email"] = email

    # --- configuration ---------------------------------------------------------

    def _config(self, guard: dict[str, Any] | None, settings: dict[str, Any]) -> Any:
        config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        config["listeners"][0]["port"] = self.port
        config["public_baseurl"] = f"http://localhost:{self.port}/"
        config.update(copy.deepcopy(TEST_SETTINGS))
        if guard is not None:
            config["modules"][0]["config"] = guard
        if self.database == "postgres":
            self.postgres_name = create_postgres_database()
            config["database"] = {
                "name": "psycopg2",
                "args": {
                    **POSTGRES,
                    "database": self.postgres_name,
                    "cp_min": 1,
                    "cp_max": 5,
                },
            }
        if self.federation_port is not None:
            self._add_federation(config, self.federation_port)
        if self.metrics_port is not None:
            config["enable_metrics"] = True
            config["listeners"].append(
                {
                    "port": self.metrics_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "metrics",
                }
            )
        if self.replication_port is not None:
            config["listeners"].append(
                {
                    "port": self.replication_port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "resources": [{"names": ["replication"]}],
                }
            )
            config["instance_map"] = {
                "main": {"host": "127.0.0.1", "port": self.replication_port}
            }
            config["redis"] = {"enabled": True, "host": "127.0.0.1", "port": 6379}
        config.update(settings)
        return config

    def _add_federation(self, config: dict[str, Any], port: int) -> None:
        """Federation over TLS on localhost, with another Homeserver of this harness."""
        certificate, key = self_signed_certificate("localhost")
        (self.workdir / "tls.crt").write_bytes(certificate)
        (self.workdir / "tls.key").write_bytes(key)
        config["listeners"].append(
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "resources": [{"names": ["federation", "keys"]}],
            }
        )
        config.update(
            server_name=f"localhost:{port}",
            tls_certificate_path="tls.crt",
            tls_private_key_path="tls.key",
            federation_verify_certificates=False,
            ip_range_whitelist=["127.0.0.1"],
        )

    @staticmethod
    def example_guard() -> dict[str, Any]:
        """The guard's config in example_homeserver.yaml."""
        config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        guard: dict[str, Any] = config["modules"][0]["config"]
        return guard

    @property
    def guard_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.config["modules"][0]["config"]
        return config

    def write_config(self) -> None:
        (self.workdir / "homeserver.yaml").write_text(yaml.safe_dump(self.config))
        log_config = self.workdir / "example_log_config.yaml"
        if not log_config.exists():
            log_config.write_text(EXAMPLE_LOG_CONFIG.read_text())
        key_file = self.workdir / self.config["signing_key_path"]
        if not key_file.exists():
            with key_file.open("w") as out:
                write_signing_keys(out, [generate_signing_key("a_test")])
        secret = self.workdir / self.config["registration_shared_secret_path"]
        if not secret.exists():
            secret.write_text(secrets.token_hex(32))

    # --- process -----------------------------------------------------------------

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.write_config()
        output = (self.workdir / "synapse.out").open("ab")
        cpus = self.cpus
        return subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", "homeserver.yaml"],
            cwd=self.workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"},
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )

    def start(self, timeout: float = 90) -> Homeserver:
        self.begin_start()
        self.finish_start(timeout)
        return self

    def begin_start(self) -> None:
        """Launch Synapse without waiting for it (see `finish_start`)."""
        self._starts_before = self._count_starts()
        self.process = self._spawn()

    def finish_start(self, timeout: float = 90) -> None:
        """Wait until Synapse answers and the guard has announced itself."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Synapse exited with {self.process.returncode}:\n{self.output()[-4000:]}"
                )
            try:
                if self.http.get(self.url("/health"), timeout=2).status_code == 200:
                    # The guard announces itself once its tables and blocks are loaded.
                    if self.config.get("modules"):
                        wait_until(
                            lambda: self._count_starts() > self._starts_before,
                            timeout=30,
                        )
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not start:\n{self.output()[-4000:]}")

    _starts_before = 0

    def _count_starts(self) -> int:
        return len([e for e in self.events() if e["event"]["action"] == "started"])

    def fail_to_start(self, timeout: float = 60) -> tuple[int, str]:
        """Run Synapse expecting it to refuse to start; returns its exit code and output."""
        process = self._spawn()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(
                "Synapse started when it should have refused"
            ) from None
        return code, self.output()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """End Synapse as a crash would: SIGKILL, no shutdown of any kind."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def add_worker(self, name: str) -> Worker:
        """Start a generic worker serving the client API on a port of its own."""
        worker = Worker(self, name)
        self.workers.append(worker)
        worker.start()
        return worker

    def destroy(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.stop()
        if self.postgres_name:
            drop_postgres_database(self.postgres_name)

    def output(self) -> str:
        path = self.workdir / "synapse.out"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- HTTP --------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        name: str = self.config["server_name"]
        return name

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def register(
        self,
        localpart: str | None = None,
        *,
        admin: bool = False,
        password: str = PASSWORD,
        displayname: str | None = None,
    ) -> Account:
        """Create an account with the shared secret, as `register_new_matrix_user` does."""
        localpart = localpart or unique("user")
        url = self.url("/_synapse/admin/v1/register")
        nonce = self.http.get(url, timeout=10).json()["nonce"]
        secret = (
            self.workdir / self.config["registration_shared_secret_path"]
        ).read_text()
        role = "admin" if admin else "notadmin"
        message = "\x00".join((nonce, localpart, password, role)).encode()
        mac = hmac.new(secret.encode(), message, digestmod=hashlib.sha1)
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        response = self.http.post(url, json=body, timeout=30)
        assert response.status_code == 200, response.text
        data = response.json()
        return Account(self, data["user_id"], data["access_token"], data["device_id"])

    def login(self, localpart: str, password: str = PASSWORD) -> requests.Response:
        return self.http.post(
            self.url("/_matrix/client/v3/login"),
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            },
            timeout=30,
        )

    def anonymous(self) -> Account:
        return Account(self, "", "", "")

    def set_email(self, admin: Account, user: Account, address: str) -> None:
        """Give the account a verified email address, as registration would."""
        response = admin.put(
            f"/_synapse/admin/v2/users/{quote(user.user_id)}",
            {"threepids": [{"medium": "email", "address": address}]},
        )
        assert response.status_code == 200, response.text

    def metrics(self, prefix: str = "synapse_tchap_guard_") -> dict[str, float]:
        """Samples from Synapse's metrics endpoint, keyed as Prometheus prints them:
        `name{label="value",...}` with labels sorted."""
        from prometheus_client.parser import text_string_to_metric_families

        assert self.metrics_port is not None, "start it with metrics=True"
        text = self.http.get(
            f"http://127.0.0.1:{self.metrics_port}/_synapse/metrics", timeout=10
        ).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(prefix) and not sample.name.endswith(
                    "_created"
                ):
                    labels = ",".join(
                        f'{key}="{value}"'
                        for key, value in sorted(sample.labels.items())
                    )
                    samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    # --- the database, from outside --------------------------------------------

    def sql(
        self, statement: str, params: tuple[Any, ...] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the homeserver's database, as an operator (or a failing
        disk) would, while Synapse runs. Use `?` placeholders."""
        if self.database == "postgres":
            import psycopg2

            connection = psycopg2.connect(dbname=self.postgres_name, **POSTGRES)
            connection.autocommit = True
            try:
                with connection.cursor() as cursor:
                    if params:
                        statement = statement.replace("%", "%%").replace("?", "%s")
                    cursor.execute(statement, params or None)
                    return list(cursor.fetchall()) if cursor.description else []
            finally:
                connection.close()
        connection = sqlite3.connect(self.workdir / "homeserver.db", timeout=30)
        try:
            rows = list(connection.execute(statement, params).fetchall())
            connection.commit()
            return rows
        finally:
            connection.close()

    # --- the guard's events --------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        path = self.workdir / EVENTS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def events_about(
        self, user_id: str, action: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events()
            if user_id
            in (
                event.get("user", {}).get("id"),
                event.get("user", {}).get("target", {}).get("id"),
            )
            and (action is None or event["event"]["action"] == action)
        ]

    def lines(self) -> Iterator[str]:
        path = self.workdir / EVENTS_FILE
        yield from path.read_text().splitlines()


class Worker:
    """A generic worker of a `Homeserver`, sharing its database, replicating via Redis."""

    def __init__(self, main: Homeserver, name: str) -> None:
        self.main = main
        self.name = name
        self.port = free_port()
        self.http = main.http
        self.events_file = f"tchap_guard_events.{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 90) -> None:
        self.begin_start()
        self.finish_start(timeout)

    def begin_start(self) -> None:
        workdir = self.main.workdir
        log_config = EXAMPLE_LOG_CONFIG.read_text().replace(
            EVENTS_FILE, self.events_file
        )
        (workdir / f"{self.name}_log_config.yaml").write_text(log_config)
        worker_config = {
            "worker_app": "synapse.app.generic_worker",
            "worker_name": self.name,
            "worker_log_config": f"{self.name}_log_config.yaml",
            "worker_listeners": [
                {
                    "type": "http",
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "resources": [{"names": ["client"]}],
                }
            ],
        }
        (workdir / f"{self.name}.yaml").write_text(yaml.safe_dump(worker_config))
        output = (workdir / f"{self.name}.out").open("ab")
        self._starts_before = self.actions().count("started")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synapse.app.generic_worker",
                "-c",
                "homeserver.yaml",
                "-c",
                f"{self.name}.yaml",
            ],
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def finish_start(self, timeout: float = 90) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker {self.name} exited:\n{self.output()[-4000:]}"
                )
            try:
                if self.http.get(self.url("/health"), timeout=2).status_code == 200:
                    wait_until(
                        lambda: self.actions().count("started") > self._starts_before,
                        timeout=30,
                    )
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"worker {self.name} did not start:\n{self.output()[-4000:]}"
        )

    _starts_before = 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def output(self) -> str:
        path = self.main.workdir / f"{self.name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        path = self.main.workdir / self.events_file
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def actions(self) -> list[str]:
        return [event["event"]["action"] for event in self.events()]

    def on(self, account: Account) -> Account:
        """The same session, talking to this worker instead of the main process."""
        return WorkerAccount(self, account)


class WorkerAccount(Account):
    def __init__(self, worker: Worker, account: Account) -> None:
        super().__init__(
            account.server, account.user_id, account.token, account.device_id
        )
        self.worker = worker

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"Bearer {self.token}"
        return self.worker.http.request(
            method, self.worker.url(path), headers=headers, timeout=30, **kwargs
        )
