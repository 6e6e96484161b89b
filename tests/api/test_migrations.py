"""Migrations go up, down and up again, and match the models (autogenerate finds no diff)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import create_engine, pool

from api.db import migrate
from api.db.cluster import EmbeddedCluster
from api.db.models import Base, include_object


@pytest.fixture
def fresh_db(pg: EmbeddedCluster) -> Iterator[str]:
    name = "gp_migrations"
    admin = pg.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows} - {"spatial_ref_sys"}


def test_upgrade_downgrade_upgrade(fresh_db: str) -> None:
    migrate.upgrade(fresh_db)
    assert migrate.current_revision(fresh_db) == migrate.head_revision()
    tables = _tables(fresh_db)
    assert {"admin_area", "users", "api_token", "audit_log", "app_meta"} <= tables
    migrate.downgrade(fresh_db, "base")
    assert migrate.current_revision(fresh_db) is None
    assert _tables(fresh_db) == {"alembic_version"}
    migrate.upgrade(fresh_db)
    assert _tables(fresh_db) == tables


def test_models_match_migrations(db_url: str) -> None:
    engine = create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": include_object, "compare_type": True}
        )
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_a_deleted_layout_takes_its_cells_with_it(fresh_db: str) -> None:
    """``grid_cell`` has no foreign key to its layout (it made bulk loads 4× slower): a trigger
    deletes a layout's cells instead, as the key's ON DELETE CASCADE did."""
    migrate.upgrade(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO admin_area (code, level, name_zh, geom) VALUES ('152500000000', "
            "'league', '锡林郭勒盟', ST_Multi(ST_MakeEnvelope(115, 43, 116, 44, 4326)))"
        )
        ids = [
            conn.execute(
                "INSERT INTO grid_layout (name, area_code, method) "
                "VALUES (%s, '152500000000', 'test') RETURNING id",
                (name,),
            ).fetchone()[0]  # type: ignore[index]
            for name in ("gone", "kept")
        ]
        for layout in ids:
            conn.execute(
                "INSERT INTO grid_cell (layout_id, h3, grid_id) "
                "SELECT %s, h, 1 FROM generate_series(1, 100) h",
                (layout,),
            )
        conn.execute("DELETE FROM grid_layout WHERE id = %s", (ids[0],))
        left = conn.execute(
            "SELECT layout_id, count(*) FROM grid_cell GROUP BY layout_id"
        ).fetchall()
    assert left == [(ids[1], 100)]
