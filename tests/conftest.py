"""Shared fixtures: one throwaway PostGIS cluster per test session (never the user's data dir),
migrated to head, with the app served in-process. Every server started here is stopped in
teardown, its output going to a log file."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import SYSTEM
from api.db import migrate
from api.db.cluster import EmbeddedCluster, free_port
from api.demo import load_demo
from api.devices import DeviceIn, create_device
from api.settings import (
    ApiSettings,
    CoverageSettings,
    DatabaseSettings,
    Jt808Settings,
    OsmAndSettings,
    Settings,
)
from api.users import create_user

T = TypeVar("T")
ROLES = ("admin", "planner", "dispatcher", "viewer")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a sync test."""
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A scratch directory the postgres system user can traverse (pytest's tmp is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="gridpatrol-test-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(workdir: Path) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(workdir / "pg", port=free_port(), dbname="gridpatrol_test")
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def db_url(pg: EmbeddedCluster) -> str:
    migrate.upgrade(pg.url)
    return pg.url


@pytest.fixture(scope="session")
def demo(db_url: str) -> str:
    """The Xilingol demo data, loaded once per session."""

    async def load() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await load_demo(conn)

    run(load())
    return db_url


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def settings(db_url: str, workdir: Path) -> Settings:
    settings = Settings(
        db=DatabaseSettings(url=db_url, data_dir=workdir / "no-embedded", pool_min=1, pool_max=8),
        api=ApiSettings(state_dir=workdir / "state", token_cache_seconds=0.0),
        osmand=OsmAndSettings(port=0),
        # the background updater would race the tests' own updates: run it only at start-up
        coverage=CoverageSettings(update_interval_s=3600.0),
        jt808=Jt808Settings(port=0),
    )
    assert settings.db.url == db_url, "tests must never fall back to the user's data dir"
    return settings


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client


async def _make_user(url: str, name: str, role: str, scope: list[str]) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return (await create_user(conn, SYSTEM, name, role=role, scope=scope)).token


@pytest.fixture(scope="session")
def make_token(db_url: str) -> Any:
    """``make_token(role, scope=['*'])`` → a fresh user's bearer token."""
    counter = iter(range(1_000_000))

    def make(role: str, scope: list[str] | None = None, name: str | None = None) -> str:
        return run(
            _make_user(
                db_url, name or f"{role}-{next(counter)}-{os.getpid()}", role, scope or ["*"]
            )
        )

    return make


async def _make_device(url: str, identifier: str, village: str | None) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        _, token = await create_device(
            conn, SYSTEM, DeviceIn(identifier=identifier, home_village=village)
        )
    return token


@pytest.fixture(scope="session")
def make_device(db_url: str) -> Any:
    """``make_device(village=None)`` → (identifier, device token)."""
    counter = iter(range(1_000_000))

    def make(village: str | None = None) -> tuple[str, str]:
        identifier = f"dev-{next(counter)}-{os.getpid()}"
        return identifier, run(_make_device(db_url, identifier, village))

    return make


@pytest.fixture(scope="session")
def tokens(make_token: Any, make_device: Any) -> dict[str, str]:
    """One league-wide user per role, and a device."""
    return {**{role: make_token(role) for role in ROLES}, "device": make_device()[1]}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
