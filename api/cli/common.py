"""Helpers shared by CLI commands: settings, connections, errors as one-line exits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
import typer
from psycopg import AsyncConnection

from api.db import ClusterError, database_url
from api.errors import DomainError
from api.settings import Settings, get_settings
from gis.boundaries import BoundaryError

T = TypeVar("T")
USER_ERRORS = (ClusterError, DomainError, BoundaryError, ValueError, FileNotFoundError)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; user errors become a one-line message and exit status 1."""
    try:
        return asyncio.run(coro)
    except DomainError as exc:
        raise fail(exc.message) from None
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise fail(f"database: {str(exc).strip().splitlines()[-1]}") from None


def settings_and_url(*, start: bool = True) -> tuple[Settings, str]:
    settings = get_settings()
    try:
        return settings, database_url(settings, start=start)
    except ClusterError as exc:
        raise fail(str(exc)) from None


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[AsyncConnection[Any]]:
    conn = await AsyncConnection.connect(url, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


def echo(line: str) -> None:
    typer.echo(line)


def is_tty() -> bool:
    return sys.stderr.isatty()
