"""The database: one PostgreSQL + PostGIS store, embedded by default or via DATABASE_URL."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg

from api.db.cluster import ClusterError, EmbeddedCluster
from api.errors import Unprocessable
from api.settings import Settings


def cluster_for(settings: Settings) -> EmbeddedCluster:
    db = settings.db
    return EmbeddedCluster(db.data_dir, port=db.port, dbname=db.name, user=db.user)


def database_url(settings: Settings, *, start: bool = False) -> str:
    """libpq URL of the application database.

    With ``DATABASE_URL`` set it is returned as given (after a reachability check when
    ``start``); otherwise the embedded cluster's URL, starting the cluster first when ``start``.
    """
    if settings.db.url:
        if start:
            check_reachable(settings.db.url)
        return settings.db.url
    cluster = cluster_for(settings)
    if start:
        cluster.start()
    elif not cluster.initialized:
        raise ClusterError(
            f"no cluster in {cluster.data_dir}; run 'gridpatrol db start' (or make run) first"
        )
    return cluster.url


def check_reachable(url: str) -> None:
    """Raise a one-line ClusterError when the external database cannot be reached."""
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"DATABASE_URL {where} is unreachable: {reason}") from exc


__all__ = ["ClusterError", "EmbeddedCluster", "check_reachable", "cluster_for", "database_url"]


def like_escape(text: str) -> str:
    """``text`` with LIKE's wildcards (``%``, ``_``) and escape character taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_terms(text: str) -> dict[str, str | None]:
    """The query parameters of a search box: ``q`` (stripped), ``like`` (contains, literal) and
    ``prefix`` (starts with, for an all-digit code; else None).

    Raises
    ------
    Unprocessable
        For an empty query.
    """
    q = text.strip()
    if not q:
        raise Unprocessable("q must not be empty", field="q")
    pattern = like_escape(q)
    return {"q": q, "like": f"%{pattern}%", "prefix": f"{pattern}%" if q.isdigit() else None}
