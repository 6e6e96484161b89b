"""Authentication (bearer tokens, hashed passwords) and authorisation (roles + data scope).

Every non-public route declares its role with one of the ``Annotated`` aliases below
(``Viewer``, ``Dispatcher``, ``Planner``, ``Admin``, ``DeviceWriter``); the dependency resolves the
token once per request into a ``Principal`` carrying role and ``Scope``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api import forwarded
from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.scope import Scope

log = logging.getLogger(__name__)

TOKEN_PREFIX = "gp_"  # noqa: S105 - a prefix, not a secret
COOKIE = "gp_token"
ROLES = ("admin", "planner", "dispatcher", "viewer")

# Which principals' roles satisfy a route's declared role. Admin satisfies everything.
SATISFIES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"viewer", "dispatcher", "planner", "admin"}),
    "dispatcher": frozenset({"dispatcher", "admin"}),
    "planner": frozenset({"planner", "admin"}),
    "admin": frozenset({"admin"}),
    "device": frozenset({"device", "admin"}),
    # a grid worker (网格员) signed in on the phone page: their own routes only (api/mobile)
    "worker": frozenset({"worker"}),
}

_hasher = PasswordHasher()

# argon2 costs ≈ 50–150 ms of CPU and 64 MiB a call: never on the event loop. Two worker threads
# (argon2 releases the GIL), and at most MAX_PENDING_HASHES calls running or queued per process;
# beyond that a sign-in is refused with 429 at once instead of queueing without bound.
HASH_THREADS = 2
MAX_PENDING_HASHES = 16


def _lower_priority() -> None:
    """Run this worker thread at the lowest CPU priority (Linux: nice is per thread, and the
    threads libargon2 starts inherit it), so the event loop's thread wins the cores whenever it
    has work: a burst of sign-ins then delays other sign-ins, not every other request."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


_hash_pool = ThreadPoolExecutor(
    max_workers=HASH_THREADS, thread_name_prefix="gp-argon2", initializer=_lower_priority
)
_hash_slots = threading.BoundedSemaphore(MAX_PENDING_HASHES)


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    if not stored:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.lru_cache(maxsize=1)
def _dummy() -> str:
    """A hash of a random password with the hasher's parameters, made once per process, to
    verify against when a name is unknown, disabled or has no password: the same work, so
    the answer's timing does not tell which names exist."""
    return _hasher.hash(secrets.token_urlsafe(16))


def _check_password(stored: str | None, password: str) -> bool:
    """One argon2 verification, always (against the dummy hash when ``stored`` is missing)."""
    ok = verify_password(stored or _dummy(), password)
    return ok and bool(stored)


async def _off_loop(func: Any, *args: Any) -> Any:
    if not _hash_slots.acquire(blocking=False):
        raise TooManyRequests("too many sign-ins in progress; try again shortly", retry_after_s=1)
    try:
        return await asyncio.get_running_loop().run_in_executor(_hash_pool, func, *args)
    finally:
        _hash_slots.release()


async def check_password(stored: str | None, password: str) -> bool:
    """``verify_password`` on a worker thread, with the same cost whether or not ``stored``
    exists (see ``_dummy``). Raises 429 when too many hashes are already pending."""
    return bool(await _off_loop(_check_password, stored, password))


async def hash_password_async(password: str) -> str:
    """``hash_password`` on a worker thread. Raises ValueError for a too-short password."""
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return str(await _off_loop(hash_password, password))


def new_token() -> str:
    """A fresh bearer token (shown once; only its hash is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens carry 256 random bits, so a fast hash suffices for lookup (passwords use argon2)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with a role) or a device, and the scope they act in."""

    name: str
    role: str
    scope: Scope
    user_id: int | None = None
    device_id: int | None = None
    token_id: int | None = None
    staff_id: int | None = None  # a grid worker (role "worker")

    def audit_fields(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "user_name": self.name, "user_scope": self.scope.codes}


SYSTEM = Principal(name="system", role="admin", scope=Scope.everything())


TOKEN_CHANNEL = "gridpatrol_tokens"  # noqa: S105 - a channel name, not a secret
"""The PostgreSQL NOTIFY channel on which every change to a token's or user's standing
(revocation, disable, scope change, issue, sign-in, device changes) is announced."""


async def notify_token_change(conn: AsyncConnection[Any]) -> None:
    """Tell every process's ``TokenStore`` to drop its cache. Call it inside the transaction that
    makes the change: PostgreSQL delivers the notification when (and only if) it commits."""
    await conn.execute("SELECT pg_notify(%s, '')", (TOKEN_CHANNEL,))


@dataclass
class TokenStore:
    """Resolves tokens to principals with a cache, so a hot path costs no query per call.

    The cache is used only while a listener connection is ``LISTEN``ing on ``TOKEN_CHANNEL``:
    each notification (one per committed change, from any process) drops it, pending ones are
    read before every cache hit, and it is dropped again whenever the listener (re)connects.
    Without a listener (``start`` not called, or the connection lost) every lookup queries.
    ``ttl`` bounds an entry's age even so.
    """

    pool: AsyncConnectionPool
    ttl: float = 5.0
    listen_url: str | None = None
    _cache: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)
    _listener: AsyncConnection[Any] | None = None
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event | None = None
    _generation: int = 0  # bumped at every drop, so a lookup racing a change is not cached

    def _drop(self) -> None:
        self._generation += 1
        self._cache.clear()

    async def start(self, ready_within_s: float = 10.0) -> None:
        """Start listening (only when caching: ``ttl`` > 0 and a ``listen_url``); waits until the
        first ``LISTEN`` is in place, or ``ready_within_s`` (the cache stays off until it is)."""
        if self.ttl <= 0 or not self.listen_url or self._task is not None:
            return
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(), name="token-cache-listener")
        try:
            await asyncio.wait_for(self._ready.wait(), ready_within_s)
        except TimeoutError:
            log.warning("token cache listener not connected yet; lookups are not cached")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listener = None
        self._drop()

    async def _listen(self) -> None:
        assert self.listen_url is not None  # noqa: S101 - start() checked
        backoff = 0.5
        while True:
            try:
                async with await AsyncConnection.connect(
                    self.listen_url, autocommit=True, application_name="gridpatrol-token-cache"
                ) as conn:
                    await conn.execute(f"LISTEN {TOKEN_CHANNEL}")
                    self._drop()  # whatever changed while we were not listening
                    self._listener = conn
                    if self._ready is not None:
                        self._ready.set()
                    backoff = 0.5
                    async for _ in conn.notifies():
                        self._drop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect on any failure
                log.warning("token cache listener lost (%s); reconnecting", exc)
            finally:
                self._listener = None
                self._drop()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _caching(self) -> bool:
        """Read pending notifications (dropping the cache on any); False when the cache may
        not be used (no listener)."""
        conn = self._listener
        if conn is None or self.ttl <= 0:
            return False
        try:
            pgconn = conn.pgconn
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                self._drop()
        except Exception:  # noqa: BLE001 - a broken listener: no cache until it reconnects
            self._drop()
            return False
        return True

    async def resolve(self, token: str) -> Principal | None:
        digest = token_hash(token)
        caching = self._caching()
        now = time.monotonic()
        hit = self._cache.get(digest) if caching else None
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        async with self.pool.connection() as conn:
            principal = await lookup_token(conn, digest)
        # cache only when no change was announced while we looked it up
        if caching and self._caching() and generation == self._generation:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (now + self.ttl, principal)
        return principal

    def forget(self) -> None:
        self._drop()


async def lookup_token(conn: AsyncConnection[Any], digest: str) -> Principal | None:
    """User tokens first, then grid workers' sessions, then device tokens."""
    row = await (
        await conn.execute(
            """
            UPDATE api_token t SET last_used_at = now()
              FROM users u
             WHERE t.token_hash = %s AND u.id = t.user_id
               AND t.revoked_at IS NULL AND NOT u.disabled
               AND (t.expires_at IS NULL OR t.expires_at > now())
            RETURNING t.id, u.id, u.name, u.role, u.scope, t.scope
            """,
            (digest,),
        )
    ).fetchone()
    if row is not None:
        token_id, user_id, name, role, user_scope, token_scope = row
        scope = Scope.parse(user_scope or [])
        if token_scope is not None:
            scope = scope.narrow(Scope.parse(token_scope))
        return Principal(name=name, role=role, scope=scope, user_id=user_id, token_id=token_id)
    worker = await lookup_staff_token(conn, digest)
    if worker is not None:
        return worker
    return await lookup_device_token(conn, digest)


WORKER_SESSION = """
UPDATE staff_token t SET last_used_at = now()
  FROM staff s
 WHERE t.token_hash = %s AND s.id = t.staff_id AND s.active AND s.role = 'worker'
   AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
RETURNING t.id, s.id, s.name,
          ARRAY(SELECT DISTINCT g.code FROM grid g JOIN grid_layout l ON l.id = g.layout_id
                 WHERE g.worker_id = s.id AND l.status = 'active' AND l.purpose = 'patrol'
                 ORDER BY g.code)
"""


async def lookup_staff_token(conn: AsyncConnection[Any], digest: str) -> Principal | None:
    """A grid worker's session: role ``worker``, scope = the grids they hold as worker in the
    active patrol layouts (none: they see nothing), ``staff_id`` set. A worker who is no longer
    active, or no longer a worker, has no session."""
    row = await (await conn.execute(WORKER_SESSION, (digest,))).fetchone()
    if row is None:
        return None
    token_id, staff_id, name, grids = row
    return Principal(
        name=f"网格员 {name}",
        role="worker",
        scope=Scope(grids=tuple(grids or ())),
        token_id=token_id,
        staff_id=staff_id,
    )


async def lookup_device_token(conn: AsyncConnection[Any], digest: str) -> Principal | None:
    has_device = await (await conn.execute("SELECT to_regclass('device') IS NOT NULL")).fetchone()
    if not has_device or not has_device[0]:
        return None
    row = await (
        await conn.execute(
            "SELECT id, identifier, home_village FROM device WHERE token_hash = %s AND enabled",
            (digest,),
        )
    ).fetchone()
    if row is None:
        return None
    device_id, identifier, village = row
    scope = Scope.parse([village]) if village else Scope()
    return Principal(name=f"device:{identifier}", role="device", scope=scope, device_id=device_id)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


def csrf_token(token: str) -> str:
    """The CSRF token of a page session: derived from its bearer token (which sits in the
    HTTP-only cookie), so it is stateless, the same in every process, and worthless without the
    cookie. Pages hand it to their script; the script sends it in ``X-CSRF-Token``."""
    return hmac.new(token.encode(), b"gridpatrol-csrf-v1", hashlib.sha256).hexdigest()


def request_token(request: Request) -> tuple[str | None, str]:
    """The request's token and where it came from: ``header`` (``Authorization: Bearer``),
    ``query`` (``?token=``, GET only), ``cookie`` (the page cookie) or ``none``.

    On GET a ``?token=`` goes before the cookie, so the token a page is about to put into the
    cookie is the one that was checked. On writes the cookie counts only together with an
    ``X-CSRF-Token`` header (checked by ``check_csrf``); a bearer header needs none."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "header"
    cookie = request.cookies.get(COOKIE)
    if request.method in ("GET", "HEAD"):
        query = request.query_params.get("token")
        if query:
            return query, "query"
        return (cookie, "cookie") if cookie else (None, "none")
    if cookie and request.headers.get(CSRF_HEADER):
        return cookie, "cookie"
    return None, "none"


def bearer_token(request: Request) -> str | None:
    """The request's token (see ``request_token``)."""
    return request_token(request)[0]


def check_csrf(request: Request, token: str) -> None:
    """A state-changing request authenticated by the page cookie must come from our own page:
    the ``X-CSRF-Token`` of the cookie's session, and an ``Origin`` (else ``Referer``) of this
    server. Raises 403 naming what is wrong."""
    given = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode(), csrf_token(token).encode()):
        raise Forbidden("CSRF check failed: X-CSRF-Token does not match the page's session")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("CSRF check failed: a cookie-authenticated write from another site")
    own = forwarded.origin(request)
    sent = request.headers.get("origin")
    if sent is None:
        referer = urlsplit(request.headers.get("referer", ""))
        sent = f"{referer.scheme}://{referer.netloc}" if referer.netloc else None
    if sent is None or sent.lower() != own:
        raise Forbidden(f"CSRF check failed: Origin {sent or 'missing'} is not {own}")


class RequireRole:
    """Dependency that authenticates the caller and checks the route's declared role(s)."""

    def __init__(self, role: str, *also: str) -> None:
        for name in (role, *also):
            if name not in SATISFIES:
                raise ValueError(f"unknown role {name!r}")
        self.role = role
        self.allowed: frozenset[str] = frozenset().union(*(SATISFIES[r] for r in (role, *also)))

    async def __call__(self, request: Request) -> Principal:
        token, source = request_token(request)
        if not token:
            raise Unauthorized(
                "missing bearer token (Authorization: Bearer …; a page's cookie counts for "
                "writes only with its X-CSRF-Token header)"
            )
        if source == "cookie" and request.method not in SAFE_METHODS:
            check_csrf(request, token)
        store: TokenStore = request.app.state.tokens
        principal = await store.resolve(token)
        if principal is None:
            if source == "query":
                raise TokenInAddressRefused("invalid, expired or revoked token")
            raise Unauthorized("invalid, expired or revoked token")
        if principal.role not in self.allowed:
            raise Forbidden(f"this needs the {self.role} role; your role is {principal.role}")
        request.state.principal = principal
        request.state.token_source = source
        request.state.csrf = csrf_token(token)
        return principal

    def __repr__(self) -> str:
        return f"RequireRole({self.role!r})"


class TokenInAddressRefused(Unauthorized):
    """A ``?token=`` that resolves to nobody: answered 401 (an HTML page for browsers), and
    never put into the cookie."""


def require_role(role: str) -> Any:
    """``Depends`` on a role, for ``dependencies=[...]`` lists."""
    return Depends(RequireRole(role))


Viewer = Annotated[Principal, Depends(RequireRole("viewer"))]
Dispatcher = Annotated[Principal, Depends(RequireRole("dispatcher"))]
Planner = Annotated[Principal, Depends(RequireRole("planner"))]
Admin = Annotated[Principal, Depends(RequireRole("admin"))]
DeviceWriter = Annotated[Principal, Depends(RequireRole("device"))]
ViewerOrDevice = Annotated[Principal, Depends(RequireRole("viewer", "device"))]
Worker = Annotated[Principal, Depends(RequireRole("worker"))]
ViewerOrWorker = Annotated[Principal, Depends(RequireRole("viewer", "worker"))]
