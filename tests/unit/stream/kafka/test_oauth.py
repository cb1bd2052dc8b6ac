"""The OAUTHBEARER token provider against a real HTTP token endpoint on 127.0.0.1 (tests/identity_provider.py):
the client-credentials request, the cache, renewal at 80% of the lifetime (in the background and on the next
call), a failed renewal served from a still-valid token, and the errors that name the endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.identity_provider import IdentityProvider
from tests.support import logged_events
from worker.dev.broker import free_port
from worker.stream.kafka.oauth import OAuthTokenProvider, TokenUnavailable, jwt_expiry

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider(lifetime_s=2) as provider:
        yield provider


def provider_for(idp: IdentityProvider, secret: str | None = None, **options: object) -> OAuthTokenProvider:
    return OAuthTokenProvider(idp.token_url, idp.client_id, idp.client_secret if secret is None else secret,
                              **options)  # type: ignore[arg-type]


async def test_one_token_is_fetched_by_the_grant_and_cached() -> None:
    with IdentityProvider(lifetime_s=60, client_secret="s3cret:with/odd+chars") as idp:
        provider = provider_for(idp, scope="kafka.write kafka.read", audience="kafka-broker")
        with logged_events() as events:
            tokens = await asyncio.gather(*(provider.token() for _ in range(5)))
            logs = events()
        provider.close()
    assert len(set(tokens)) == 1 and len(idp.issued) == 1
    assert idp.requests == [{"grant_type": "client_credentials", "scope": "kafka.write kafka.read",
                             "audience": "kafka-broker"}]
    assert idp.issued[0].claims["scope"] == "kafka.write kafka.read"
    fetched = [entry for entry in logs if entry["event"] == "oauth_token_fetched"]
    assert len(fetched) == 1 and 59 <= fetched[0]["expires_in_s"] <= 60 and fetched[0]["url"] == idp.token_url
    assert not any(tokens[0] in str(entry) or idp.client_secret in str(entry) for entry in logs)


async def test_the_token_is_renewed_in_the_background_before_it_expires(idp: IdentityProvider) -> None:
    provider = provider_for(idp)
    first = await provider.token()
    await asyncio.sleep(1.8)  # past 80% of 2 s: the timer renewed it, no call asked
    assert len(idp.issued) == 2 and idp.issued[1].at < idp.issued[0].at + 2
    began = time.monotonic()
    second = await provider.token()
    provider.close()
    assert second != first and time.monotonic() - began < 0.05  # served from the cache, no wait


async def test_without_the_timer_the_next_call_replaces_a_token_past_its_window(idp: IdentityProvider) -> None:
    provider = provider_for(idp)
    first = await provider.token()
    provider.close()  # no background renewal: only a call can renew it now
    await asyncio.sleep(1.0)
    assert await provider.token() == first and len(idp.issued) == 1  # at 50% of the lifetime: still fresh
    await asyncio.sleep(0.7)
    assert await provider.token() != first and len(idp.issued) == 2  # at 85%: replaced, though still valid


async def test_the_lifetime_comes_from_the_jwt_exp_claim_without_expires_in() -> None:
    with IdentityProvider(lifetime_s=30, expires_in=False) as idp:
        provider = provider_for(idp)
        token = await provider.token()
        provider.close()
    expiry = jwt_expiry(token)
    assert expiry is not None and 28 <= expiry - time.time() <= 30
    assert provider._token is not None and 28 <= provider._token.lifetime_s <= 30
    assert jwt_expiry("opaque-token") is None


async def test_a_failed_renewal_keeps_serving_the_valid_token_then_fails_naming_the_endpoint(
        idp: IdentityProvider) -> None:
    provider = provider_for(idp)
    first = await provider.token()
    idp.status = 503
    with logged_events() as events:
        await asyncio.sleep(1.7)  # the timer's renewal at 80% fails
        assert await provider.token() == first
        logs = events()
    provider.close()
    warned = [entry for entry in logs if entry["event"] == "oauth_token_refresh_failed"]
    assert warned and "HTTP 503" in warned[0]["error"] and 0 < warned[0]["cached_valid_for_s"] <= 0.5
    await asyncio.sleep(0.5)  # now expired, and a renewal failed a moment ago
    with pytest.raises(TokenUnavailable, match=f"{idp.token_url} answered HTTP 503"):
        await provider.token()


async def test_a_refused_client_is_named(idp: IdentityProvider) -> None:
    provider = provider_for(idp, secret="not-the-secret")
    with pytest.raises(TokenUnavailable, match=r"answered HTTP 401 \(invalid_client: client authentication failed"
                       ) as refused:
        await provider.token()
    assert refused.value.refused and idp.token_url in str(refused.value) and not idp.issued


async def test_an_unreachable_or_silent_endpoint_is_named() -> None:
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}/token"
    with pytest.raises(TokenUnavailable, match=f"the token endpoint {url} is unreachable: .*refused") as closed:
        await OAuthTokenProvider(url, "id", "secret").token()
    assert not closed.value.refused
    with IdentityProvider(delay_s=1.0) as idp:
        began = time.monotonic()
        with pytest.raises(TokenUnavailable, match=r"unreachable: .*timed out"):
            await provider_for(idp, timeout_s=0.3).token()
        assert time.monotonic() - began < 0.9


async def test_a_failed_background_renewal_is_tried_again_before_the_token_expires() -> None:
    with IdentityProvider(lifetime_s=4) as idp:
        provider = provider_for(idp)
        await provider.token()
        idp.status = 503
        await asyncio.sleep(3.4)  # the renewal at 3.2 s failed; the token is valid until 4 s
        assert len(idp.requests) == 2 and len(idp.issued) == 1
        idp.status = None
        await asyncio.sleep(0.5)  # tried again at 3.7 s, in the background
        provider.close()
    assert len(idp.issued) == 2 and idp.issued[1].at < idp.issued[0].at + 4
