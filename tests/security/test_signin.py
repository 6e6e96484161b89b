"""Issue 18, items 7 (argon2 part) and 8: sign-in.

- argon2 ran on the event loop: a few failed sign-ins stalled every other request. Password
  checks now run on worker threads, bounded, so ``/healthz`` answers while sign-ins are in flight.
- A known name cost an argon2 verification, an unknown one none (≈165 ms vs ≈5 ms): the timing
  told which names exist. Unknown, disabled and password-less names now verify against a dummy
  hash exactly as a known name does.
- The limiter keyed on address + name and believed anyone's ``X-Forwarded-For``. Now one budget
  per name (across addresses) and one per address (across names), and a forwarded address is
  believed only from ``GRIDPATROL_API_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from api.ratelimit import RateLimiter, SignInLimiter
from tests.conftest import auth

PASSWORD = "right-horse-battery"


def _name(tag: str) -> str:
    return f"signin-{tag}-{os.getpid()}"


@pytest.fixture
def fresh_limits(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> SignInLimiter:
    """A limiter of this test's own (the session's app keeps its budgets for other tests), with
    small budgets that do not refill during a test (the defaults: 10 per name, 30 per address)."""
    limits = SignInLimiter(
        per_name=RateLimiter(rate=0.001, burst=5), per_address=RateLimiter(rate=0.001, burst=8)
    )
    state = client.app.state._state  # type: ignore[attr-defined]
    monkeypatch.setitem(state, "login_limiter", limits)
    return limits


@pytest.fixture
def peer(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``peer("203.0.113.9")`` makes the test client's requests come from that address."""
    transport: Any = client._transport

    def set_peer(address: str) -> None:
        monkeypatch.setattr(transport, "client", (address, 40000))

    return set_peer


def _sign_in(client: TestClient, name: str, password: str = "wrong-pass", **kw: Any) -> Any:  # noqa: S107
    return client.post("/api/v1/auth/token", json={"name": name, "password": password}, **kw)


# ---- item 7: off the event loop -----------------------------------------------------------------
@pytest.mark.usefixtures("fresh_limits")
def test_sign_ins_in_flight_do_not_stall_other_requests(
    client: TestClient, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While four password checks are held mid-hash, ``/healthz`` still answers, and the checks
    ran on the hashing threads, not the event loop's."""
    user = _name("held")
    created = client.post(
        "/api/v1/users",
        json={"name": user, "role": "viewer", "scope": ["152502"], "password": PASSWORD},
        headers=auth(tokens["admin"]),
    )
    assert created.status_code == 201, created.text
    entered = threading.Semaphore(0)
    release = threading.Event()
    threads_seen: list[str] = []
    real_verify = PasswordHasher.verify

    def held_verify(self: PasswordHasher, stored: Any, password: Any) -> bool:
        threads_seen.append(threading.current_thread().name)
        entered.release()
        release.wait(timeout=60)
        return real_verify(self, stored, password)

    monkeypatch.setattr(PasswordHasher, "verify", held_verify)
    answers: list[int] = []
    sign_ins = [
        threading.Thread(
            target=lambda: answers.append(_sign_in(client, user).status_code), daemon=True
        )
        for _ in range(4)
    ]
    for t in sign_ins:
        t.start()
    try:
        assert entered.acquire(timeout=60), "no sign-in reached the password check"
        health: list[int] = []
        probe = threading.Thread(
            target=lambda: health.append(client.get("/healthz").status_code), daemon=True
        )
        probe.start()
        probe.join(timeout=30)  # generous: it answers in milliseconds unless the loop is held
        assert health == [200], "/healthz did not answer while sign-ins were hashing"
    finally:
        release.set()
        for t in sign_ins:
            t.join(timeout=60)
    assert sorted(answers) == [401, 401, 401, 401]
    assert threads_seen
    assert all(name.startswith("gp-argon2") for name in threads_seen), threads_seen


# ---- item 8: no timing oracle ------------------------------------------------------------------
def test_unknown_disabled_and_passwordless_names_cost_the_same_verification(
    client: TestClient,
    tokens: dict[str, str],
    make_token: Any,
    fresh_limits: SignInLimiter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = auth(tokens["admin"])
    known, disabled, tokenonly = _name("known"), _name("disabled"), _name("tokenonly")
    for name in (known, disabled):
        created = client.post(
            "/api/v1/users",
            json={"name": name, "role": "viewer", "scope": ["152502"], "password": PASSWORD},
            headers=admin,
        )
        assert created.status_code == 201, created.text
    assert client.delete(f"/api/v1/users/{disabled}", headers=admin).status_code == 200
    make_token("viewer", ["152502"], name=tokenonly)

    calls: list[tuple[str, str]] = []
    real_verify = PasswordHasher.verify

    def recording_verify(self: PasswordHasher, stored: Any, password: Any) -> bool:
        text = stored.decode() if isinstance(stored, bytes) else str(stored)
        calls.append(("$".join(text.split("$")[:4]), threading.current_thread().name))
        return real_verify(self, stored, password)

    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)
    bodies = {}
    per_name_calls = {}
    for name in (known, _name("never-existed"), disabled, tokenonly):
        before = len(calls)
        response = _sign_in(client, name)
        assert response.status_code == 401, (name, response.text)
        bodies[name] = response.json()
        per_name_calls[name] = calls[before:]
    # each path did exactly one argon2 verification, with the same parameters, off the loop
    assert [len(c) for c in per_name_calls.values()] == [1, 1, 1, 1], per_name_calls
    assert len({c[0][0] for c in per_name_calls.values()}) == 1, per_name_calls
    assert next(iter(per_name_calls.values()))[0][0].startswith("$argon2id$v=19$m=")
    # and the same answer
    assert len({(b["error"], b["detail"]) for b in bodies.values()}) == 1, bodies
    # the right password still signs in
    assert _sign_in(client, known, PASSWORD).status_code == 200


# ---- item 8: limits per name and per address ---------------------------------------------------
def test_a_spoofed_forwarded_for_does_not_escape_the_per_address_limit(
    client: TestClient, fresh_limits: SignInLimiter, peer: Any
) -> None:
    """From one untrusted peer, a new X-Forwarded-For and a new name each time: the address's
    budget still runs out (before: address + name keyed, so every attempt was fresh)."""
    peer("203.0.113.50")
    statuses = []
    for i in range(20):
        response = _sign_in(
            client, _name(f"spray-{i}"), headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert "address" in response.json()["detail"]
            assert int(response.headers["retry-after"]) >= 1
            break
    assert statuses[-1] == 429, statuses
    assert statuses == [401] * 8 + [429]  # the address's whole budget, whatever the header said
    # another address is not affected
    peer("203.0.113.51")
    assert _sign_in(client, _name("spray-other")).status_code == 401


def test_the_per_name_limit_holds_across_addresses(
    client: TestClient, fresh_limits: SignInLimiter, peer: Any
) -> None:
    """Guessing one user's password from many addresses runs out of the name's budget."""
    target = _name("target")
    statuses = []
    for i in range(20):
        peer(f"192.0.2.{i + 1}")
        response = _sign_in(client, target)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert "user name" in response.json()["detail"]
            break
    assert statuses[-1] == 429, statuses
    assert statuses == [401] * 5 + [429]
    # the addresses used are not blocked for other names
    assert _sign_in(client, _name("bystander")).status_code == 401


def test_a_forwarded_address_is_believed_only_from_a_configured_proxy(
    client: TestClient,
    fresh_limits: SignInLimiter,
    peer: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    monkeypatch.setattr(settings.api, "trusted_proxies", "10.20.30.0/24")
    peer("10.20.30.40")  # the proxy
    for i in range(3):
        # each attempt comes from a different real client behind the proxy: own budgets
        response = _sign_in(
            client, _name(f"proxied-{i}"), headers={"X-Forwarded-For": f"6.6.6.6, 198.18.0.{i}"}
        )
        assert response.status_code == 401
    keys = set(fresh_limits.per_address._buckets)
    assert keys == {"address:198.18.0.0", "address:198.18.0.1", "address:198.18.0.2"}, keys
    # an untrusted peer's header is ignored: its own address is the key
    peer("203.0.113.77")
    _sign_in(client, _name("proxied-x"), headers={"X-Forwarded-For": "198.18.0.99"})
    assert "address:203.0.113.77" in fresh_limits.per_address._buckets
    assert "address:198.18.0.99" not in fresh_limits.per_address._buckets
