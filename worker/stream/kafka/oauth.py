"""SASL OAUTHBEARER's tokens: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4), cached and renewed early.

aiokafka awaits ``token()`` at every connection's SASL login; one provider per process (``token_provider``) serves
the consumer, the producer and the admin client alike. A token is replaced once 80% of its lifetime has passed
(Java's sasl.login.refresh.window.factor): by a timer thread in the background, so that no connection waits on the
identity provider, else by the next ``token()``. Its lifetime is the answer's ``expires_in``, else the JWT's ``exp``
claim (read, not verified: the broker verifies it). A failed renewal while the cached token is still valid is a
warning and the cached token goes on serving; with no valid token, ``token()`` raises TokenUnavailable naming the
endpoint. The HTTP call is the stdlib's urllib in a thread: one POST a token lifetime needs no HTTP client library.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError

from worker.settings import Settings
from worker.stream.kafka.errors import KafkaConfigError

log = structlog.get_logger("worker.oauth")

REFRESH_WINDOW = 0.8  # of a token's lifetime, as Java's sasl.login.refresh.window.factor
FETCH_TIMEOUT_S = 10.0
RETRY_S = 5.0  # the time between two failed fetches: a refused client must not hammer the identity provider
MIN_RETRY_S = 0.5  # ... shortened while a cached token is valid, so that a renewal is tried again before it expires
REFUSALS = (400, 401, 403)  # the endpoint answered and refused this client (RFC 6749 §5.2: invalid_client, ...)


class TokenUnavailable(KafkaConnectionError):  # type: ignore[misc]
    """No valid token: the token endpoint cannot be reached, refused the client or answered nonsense.

    A KafkaConnectionError, so that aiokafka treats a login without a token as a connection that failed (it
    retries, its tasks live on); the edge (options.login_refusal) turns it into OAuthTokenFailed at start-up.
    ``refused``: the endpoint answered and said no, retrying the same credentials cannot help.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class Token:
    value: str
    fetched_at: float  # time.monotonic() when it was asked for
    lifetime_s: float

    @property
    def refresh_at(self) -> float:
        return self.fetched_at + REFRESH_WINDOW * self.lifetime_s

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.lifetime_s


class OAuthTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """Client-credentials tokens from ``url``, cached until 80% of their lifetime and renewed in the background."""

    def __init__(self, url: str, client_id: str, client_secret: str, *, scope: str | None = None,
                 audience: str | None = None, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {}),
                **({"audience": audience} if audience else {})}
        self._body = urllib.parse.urlencode(form).encode()
        # RFC 6749 §2.3.1: the id and the secret are form-encoded, then joined for HTTP Basic authentication.
        pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client_secret)}"
        self._authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        self._lock = threading.Lock()  # one fetch at a time; taken only in threads, never on the event loop
        self._token: Token | None = None
        self._failure: TokenUnavailable | None = None
        self._retry_at = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False

    async def token(self) -> str:
        """A valid token for a SASL login; waits on the endpoint only when none is cached or the timer fell behind."""
        cached, now = self._token, time.monotonic()
        if cached is not None and (now < cached.refresh_at or (now < self._retry_at and now < cached.expires_at)):
            return cached.value
        return await asyncio.to_thread(self.current)

    def current(self) -> str:
        """The cached token while it is fresh, else a new one (blocking: run it in a thread)."""
        with self._lock:
            cached, now = self._token, time.monotonic()
            if cached is not None and now < cached.refresh_at:
                return cached.value  # another caller fetched it while this one waited for the lock
            if now < self._retry_at:  # a fetch failed a moment ago: do not ask again yet
                if cached is not None and now < cached.expires_at:
                    return cached.value
                assert self._failure is not None
                raise self._failure
            try:
                token = self._fetch()
            except TokenUnavailable as exc:
                return self._failed(exc, cached)
            self._token, self._failure, self._retry_at = token, None, 0.0
            self._arm(token.refresh_at - time.monotonic())
            log.info("oauth_token_fetched", url=self.url, expires_in_s=round(token.lifetime_s, 1))
            return token.value

    def close(self) -> None:
        """Stop renewing in the background (the cached token stays usable)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def _failed(self, exc: TokenUnavailable, cached: Token | None) -> str:
        now = time.monotonic()
        self._failure, self._retry_at = exc, now + RETRY_S
        if cached is None or now >= cached.expires_at:
            raise exc
        valid_s = cached.expires_at - now
        log.warning("oauth_token_refresh_failed", url=self.url, error=str(exc), cached_valid_for_s=round(valid_s, 1))
        retry_s = min(RETRY_S, max(valid_s / 2, MIN_RETRY_S))  # again before it expires, if it is not too late
        self._retry_at = now + retry_s
        self._arm(retry_s)
        return cached.value

    def _arm(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._closed:
            return
        self._timer = threading.Timer(max(delay_s, 0.0), self._renew)
        self._timer.daemon = True  # a process that exits does not wait for its next token
        self._timer.start()

    def _renew(self) -> None:
        try:
            self.current()
        except TokenUnavailable as exc:  # nothing valid left: the next login asks again and fails loudly
            log.warning("oauth_token_refresh_failed", url=self.url, error=str(exc), cached_valid_for_s=0)

    def _fetch(self) -> Token:
        began = time.monotonic()
        request = urllib.request.Request(self.url, data=self._body, method="POST", headers={
            "Authorization": self._authorization, "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise TokenUnavailable(f"the token endpoint {self.url} answered HTTP {exc.code}{_oauth_error(exc)}",
                                   refused=exc.code in REFUSALS) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout
            reason = getattr(exc, "reason", exc)
            raise TokenUnavailable(f"the token endpoint {self.url} is unreachable: {reason}") from exc
        return _token(self.url, body, began)


def _oauth_error(exc: urllib.error.HTTPError) -> str:
    """The answer's RFC 6749 §5.2 error and its description, where it gave them."""
    try:
        answer = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return ""
    if not isinstance(answer, dict) or "error" not in answer:
        return ""
    described = f": {answer['error_description']}" if answer.get("error_description") else ""
    return f" ({answer['error']}{described})"


def _token(url: str, body: bytes, fetched_at: float) -> Token:
    """The access token of a successful answer and its lifetime in seconds."""
    try:
        answer: Any = json.loads(body)
    except ValueError as exc:
        raise TokenUnavailable(f"the token endpoint {url} answered something that is not JSON") from exc
    value = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise TokenUnavailable(f"the token endpoint {url} answered without an access_token")
    lifetime = answer.get("expires_in")
    if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = jwt_expiry(value)
        if lifetime is None:
            raise TokenUnavailable(f"the token endpoint {url} answered neither expires_in nor a JWT with an exp "
                                   "claim: the token's lifetime is unknown")
        lifetime -= time.time()
    if lifetime <= 0:
        raise TokenUnavailable(f"the token endpoint {url} answered a token that has already expired")
    return Token(value, fetched_at=fetched_at, lifetime_s=float(lifetime))


def jwt_expiry(token: str) -> float | None:
    """A JWT's exp claim (seconds since the epoch), read without verifying the signature; None if it has none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def token_provider(settings: Settings) -> OAuthTokenProvider:
    """The process's provider for these settings: every client shares its tokens (one fetch per renewal)."""
    url, client_id = settings.sasl_oauthbearer_token_endpoint_url, settings.sasl_oauthbearer_client_id
    secret = settings.sasl_oauthbearer_client_secret
    if not url or not client_id or secret is None:
        raise KafkaConfigError("SASL OAUTHBEARER needs NOTIF_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL, "
                               "NOTIF_SASL_OAUTHBEARER_CLIENT_ID and NOTIF_SASL_OAUTHBEARER_CLIENT_SECRET")
    return _shared(url, client_id, secret.get_secret_value(), settings.sasl_oauthbearer_scope,
                   settings.sasl_oauthbearer_audience)


@functools.cache
def _shared(url: str, client_id: str, secret: str, scope: str | None, audience: str | None) -> OAuthTokenProvider:
    return OAuthTokenProvider(url, client_id, secret, scope=scope, audience=audience)
