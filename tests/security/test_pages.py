"""Issue 18, item 13: map pages, their cookie, CSRF and Content-Security-Policy.

Before: ``/maps/dispatch`` and ``/maps/planner`` put the bearer token into ``window.GP_CONFIG``;
any ``?token=X`` was written into the cookie unchecked (a link could swap a user's session:
login CSRF); pages had no CSP and could be framed; the cookie was never ``Secure``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.auth import csrf_token
from tests.conftest import auth

HTML = {"Accept": "text/html,application/xhtml+xml"}
PAGES = ["/map", "/maps/dispatch", "/maps/planner", "/maps/coverage"]
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)


@pytest.fixture
def anonymous(client: TestClient) -> Iterator[TestClient]:
    """The session's client, its cookie jar emptied before and after (other tests stay
    anonymous)."""
    client.cookies.clear()
    try:
        yield client
    finally:
        client.cookies.clear()


def _config(html: str) -> dict[str, Any]:
    match = re.search(r"window\.GP_CONFIG = (\{.*?\});</script>", html)
    assert match, "no page configuration"
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def _cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"gp_token={token}"}


# ---- the token stays out of the page ----------------------------------------------------------
@pytest.mark.usefixtures("demo")
@pytest.mark.parametrize("path", ["/maps/dispatch", "/maps/planner"])
def test_pages_do_not_embed_the_bearer_token(
    anonymous: TestClient, tokens: dict[str, str], path: str
) -> None:
    token = tokens["admin"]
    for headers in (auth(token), _cookie(token)):
        page = anonymous.get(path, headers=headers)
        assert page.status_code == 200, page.text
        assert token not in page.text
        config = _config(page.text)
        assert "token" not in config
        assert config["csrf"] == csrf_token(token)


# ---- ?token= is checked before it becomes the cookie -------------------------------------------
@pytest.mark.usefixtures("demo")
def test_an_invalid_query_token_gets_a_401_page_and_no_cookie(
    anonymous: TestClient, tokens: dict[str, str]
) -> None:
    for path in ("/map", "/maps/dispatch"):
        page = anonymous.get(
            f"{path}?token=gp_made-up-by-an-attacker", headers=HTML, follow_redirects=False
        )
        assert page.status_code == 401
        assert "set-cookie" not in page.headers
        assert page.headers["content-type"].startswith("text/html")
        assert "401" in page.text
        assert "gp_made-up" not in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


@pytest.mark.usefixtures("demo")
def test_a_link_cannot_swap_a_signed_in_users_cookie(
    anonymous: TestClient, tokens: dict[str, str], make_token: Any
) -> None:
    """The victim holds a valid cookie; a link carries someone else's (made-up or revoked)
    token. Before, the victim's cookie authenticated the request and the link's token was
    written into the cookie unchecked."""
    victim = tokens["dispatcher"]
    page = anonymous.get(
        "/maps/dispatch?token=gp_attackers-session",
        headers={**_cookie(victim), **HTML},
        follow_redirects=False,
    )
    assert page.status_code == 401
    assert "set-cookie" not in page.headers


@pytest.mark.usefixtures("demo")
def test_a_valid_query_token_becomes_an_http_only_cookie_secure_over_tls(
    client: TestClient, anonymous: TestClient, tokens: dict[str, str], monkeypatch: Any
) -> None:
    token = tokens["viewer"]

    def set_cookie(**kw: Any) -> str:
        response = anonymous.get(f"/map?token={token}", follow_redirects=False, **kw)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/map"
        cookie: str = response.headers["set-cookie"]
        assert cookie.startswith(f"gp_token={token};")
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        anonymous.cookies.clear()
        return cookie.lower()

    assert "; secure" not in set_cookie()  # plain http (development)
    # a client claiming https through a header: not believed from an unconfigured peer
    assert "; secure" not in set_cookie(headers={"X-Forwarded-Proto": "https"})
    # over https, or behind a configured TLS proxy that says so
    https = TestClient(client.app, base_url="https://testserver")
    https.portal = client.portal  # the running app's loop (its pool lives there)
    response = https.get(f"/map?token={token}", follow_redirects=False)
    assert "; secure" in response.headers["set-cookie"].lower()
    settings = client.app.state.settings  # type: ignore[attr-defined]
    monkeypatch.setattr(settings.api, "trusted_proxies", "10.0.0.0/8")
    monkeypatch.setattr(client._transport, "client", ("10.1.2.3", 40000))
    assert "; secure" in set_cookie(headers={"X-Forwarded-Proto": "https"})


# ---- CSP, framing ------------------------------------------------------------------------------
@pytest.mark.usefixtures("demo")
@pytest.mark.parametrize("path", PAGES)
def test_pages_send_a_csp_with_frame_ancestors_and_nonce_every_script(
    anonymous: TestClient, tokens: dict[str, str], path: str
) -> None:
    page = anonymous.get(path, headers=auth(tokens["admin"]))
    assert page.status_code == 200, page.text
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    nonce = re.search(r"'nonce-([^']+)'", directives["script-src"])
    assert nonce, csp
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert directives["connect-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    scripts = re.findall(r"<script\b[^>]*>", page.text, re.IGNORECASE)
    assert scripts
    assert all(f'nonce="{nonce.group(1)}"' in tag for tag in scripts), scripts
    assert not INLINE_HANDLER.search(page.text), INLINE_HANDLER.search(page.text)
    again = anonymous.get(path, headers=auth(tokens["admin"]))
    assert again.headers["content-security-policy"] != csp  # a fresh nonce per response


# ---- CSRF: the cookie counts for writes only with the page's CSRF token and our Origin ----------
@pytest.mark.usefixtures("demo")
def test_cookie_writes_need_the_csrf_token_and_our_origin(
    anonymous: TestClient, tokens: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    token = tokens["dispatcher"]
    kind = f"csrf-check-{os.getpid()}"

    def report(tag: str, headers: dict[str, str]) -> Any:
        body = {"kind": f"{kind}-{tag}", "priority": 3, "lon": 116.07, "lat": 43.95}
        return anonymous.post("/api/v1/incidents", json=body, headers=headers)

    def stored(tag: str) -> int:
        row = db.execute("SELECT count(*) FROM incident WHERE kind = %s", (f"{kind}-{tag}",))
        return int(row.fetchone()[0])  # type: ignore[index]

    own = {"Origin": "http://testserver"}
    csrf = {"X-CSRF-Token": csrf_token(token)}
    # a cross-site form or fetch: the cookie alone is not a credential for a write
    refused = report("bare", {**_cookie(token), **own})
    assert refused.status_code == 401
    # a forged or another session's CSRF token
    wrong = report("wrong", {**_cookie(token), **own, "X-CSRF-Token": csrf_token("gp_other")})
    assert wrong.status_code == 403
    assert "CSRF" in wrong.json()["detail"]
    # the right token from another origin, or with no origin at all
    foreign = report("foreign", {**_cookie(token), **csrf, "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert "Origin" in foreign.json()["detail"]
    assert report("no-origin", {**_cookie(token), **csrf}).status_code == 403
    cross = report("cross", {**_cookie(token), **csrf, **own, "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    for tag in ("bare", "wrong", "foreign", "no-origin", "cross"):
        assert stored(tag) == 0, tag
    # the page itself: cookie + CSRF token + our origin
    page = report("page", {**_cookie(token), **csrf, **own, "Sec-Fetch-Site": "same-origin"})
    assert page.status_code == 201, page.text
    assert stored("page") == 1
    # a bearer header needs no CSRF token (no browser sends it on its own)
    assert report("bearer", auth(token)).status_code == 201
    assert stored("bearer") == 1


@pytest.mark.usefixtures("demo")
def test_a_token_link_from_another_site_is_not_stored_without_a_click(
    anonymous: TestClient, tokens: dict[str, str]
) -> None:
    """Even a valid token (the attacker's own) arriving by a cross-site link is not put into the
    cookie: the page asks, and the click on its link is a same-origin navigation."""
    attackers = tokens["viewer"]
    page = anonymous.get(
        f"/maps/coverage?token={attackers}",
        headers={**HTML, "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert page.status_code == 200
    assert "set-cookie" not in page.headers
    assert "Continue" in page.text
    assert f'href="/maps/coverage?token={attackers}"' in page.text
    same = anonymous.get(
        f"/maps/coverage?token={attackers}",
        headers={**HTML, "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303
    assert same.headers["set-cookie"].startswith(f"gp_token={attackers};")
