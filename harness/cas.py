"""A minimal CAS server, so that tests can drive SSO through Synapse for real.

It "logs in" whoever the test says is at the keyboard (`signed_in`), sends the browser
back to the service with a ticket, and confirms that ticket when Synapse asks.
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape


class FakeCas:
    def __init__(self) -> None:
        self.signed_in: str | None = None  # the CAS user at the keyboard
        self._tickets: dict[str, str] = {}
        cas = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/cas/login":
                    cas.login(self, query["service"])
                elif url.path == "/cas/proxyValidate":
                    cas.validate(self, query.get("ticket", ""))
                else:
                    self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cas"

    def login(self, handler: BaseHTTPRequestHandler, service: str) -> None:
        assert self.signed_in is not None, "nobody is signed in at the CAS"
        ticket = f"ST-{secrets.token_hex(8)}"
        self._tickets[ticket] = self.signed_in
        separator = "&" if "?" in service else "?"
        handler.send_response(302)
        handler.send_header("Location", f"{service}{separator}ticket={ticket}")
        handler.end_headers()

    def validate(self, handler: BaseHTTPRequestHandler, ticket: str) -> None:
        user = self._tickets.pop(ticket, None)
        inner = (
            f"<cas:authenticationSuccess><cas:user>{escape(user)}</cas:user>"
            "</cas:authenticationSuccess>"
            if user
            else '<cas:authenticationFailure code="INVALID_TICKET"/>'
        )
        body = (
            "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'>"
            f"{inner}</cas:serviceResponse>"
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
