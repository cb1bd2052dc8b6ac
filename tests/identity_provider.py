"""A small OAuth 2.0 identity provider for the tests, on 127.0.0.1: a client-credentials token endpoint issuing
RS256 JWTs (signed with `cryptography`) and the JWKS a broker verifies them with; it counts what it issued."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_ID = "test-key"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(number: int) -> bytes:
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


@dataclass(frozen=True)
class Issued:
    at: float  # time.time() when it was issued
    expires: float  # its exp claim
    claims: dict[str, Any]


@dataclass
class IdentityProvider:
    """``with IdentityProvider(lifetime_s=10) as idp: idp.token_url``; ``status`` forces an answer (e.g. 503)."""

    client_id: str = "notif-worker"
    client_secret: str = "client-s3cret"
    lifetime_s: int = 10
    audience: str = "kafka-broker"
    expires_in: bool = True  # say expires_in in the answer; False: the JWT's exp claim is all a client has
    status: int | None = None
    delay_s: float = 0.0
    issued: list[Issued] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._server: ThreadingHTTPServer | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KEY_ID,
                          "n": b64url(_int_bytes(numbers.n)), "e": b64url(_int_bytes(numbers.e))}]}

    def sign(self, claims: dict[str, Any]) -> str:
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KEY_ID}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = self.key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{b64url(signature)}"

    def answer(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer (status, JSON body) to one request (RFC 6749 §4.4 and §5)."""
        self.requests.append(form)
        time.sleep(self.delay_s)
        if self.status is not None:
            return self.status, {"error": "temporarily_unavailable"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        scheme, _, encoded = authorization.partition(" ")
        user, _, password = base64.b64decode(encoded if scheme == "Basic" else "").decode().partition(":")
        if (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)) != (self.client_id,
                                                                                      self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "client authentication failed"}
        now = int(time.time())
        claims: dict[str, Any] = {"sub": self.client_id, "iss": self.issuer, "aud": self.audience, "iat": now,
                                  "exp": now + self.lifetime_s, "scope": form.get("scope", "kafka")}
        self.issued.append(Issued(time.time(), now + self.lifetime_s, claims))
        body: dict[str, Any] = {"access_token": self.sign(claims), "token_type": "Bearer"}
        return 200, body | ({"expires_in": self.lifetime_s} if self.expires_in else {})

    def start(self) -> IdentityProvider:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, idp.jwks()) if self.path == "/jwks" else self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path != "/token" or self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
                    self._send(400, {"error": "invalid_request"})
                    return
                self._send(*idp.answer(form, self.headers.get("Authorization", "")))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up (its timeout)
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="identity-provider", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> IdentityProvider:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
