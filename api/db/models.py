"""The schema, as SQLAlchemy 2 / GeoAlchemy2 models. Alembic owns it; hot paths use plain SQL.

Migrations in ``api/db/migrations/versions`` are written to match these models exactly; the test
``tests/api/test_migrations.py`` runs autogenerate against a migrated database and expects no diff.
"""

from __future__ import annotations

from datetime import datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ADMIN_LEVELS = ("league", "county", "township", "village")
ROLES = ("admin", "planner", "dispatcher", "viewer")


# Tables PostGIS/pgRouting own, and partitions or staging tables made at run time, are not ours.
FOREIGN_TABLES = frozenset({"spatial_ref_sys", "topology", "layer"})
RUNTIME_TABLE_PREFIXES = ("position_p", "tmp_", "staging_")
# Tables written by raw SQL migrations (partitioning, arrays, set-based hot paths): their
# migrations are the schema of record, so autogenerate leaves them alone.
SQL_OWNED_TABLES = frozenset(
    {
        "device",
        "position",
        "position_default",
        "device_state",
        "position_rejected",
        "ingest_counter",
        "ingest_refusal",
        "jt808_command",
        "staff",
        "grid_layout",
        "grid",
        "grid_cell",
        "alert_point",
        "household",
        "cell_visit",
        "coverage_dirty",
        "device_day",
        "grid_visit",
        "grid_visit_day",
        "grid_lineage",
        "incident",
        "dispatch",
        "incident_event",
        "notification",
        "road_dataset",
        "road_node",
        "road_edge",
        "report_job",
        "report_request",
        "staff_token",
        "patrol",
        "incident_photo",
    }
)


def include_object(
    obj: object,  # noqa: ARG001
    name: str | None,
    type_: str,
    reflected: bool,  # noqa: ARG001
    compare_to: object,  # noqa: ARG001
) -> bool:
    """Alembic filter: compare only the tables this schema owns."""
    if type_ == "table" and name is not None:
        return (
            name not in FOREIGN_TABLES
            and name not in SQL_OWNED_TABLES
            and not name.startswith(RUNTIME_TABLE_PREFIXES)
        )
    return True


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> DateTime:
    return DateTime(timezone=True)


class AdminArea(Base):
    """盟 / 旗县 / 苏木乡镇 / 嘎查村: one row per administrative area, keyed by its NBS code."""

    __tablename__ = "admin_area"
    __table_args__ = (
        CheckConstraint(f"level IN {ADMIN_LEVELS!r}", name="level"),
        CheckConstraint("code ~ '^[0-9]{12}$'", name="code_digits"),
        Index("ix_admin_area_geom", "geom", postgresql_using="gist"),
    )

    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), index=True)
    parent_code: Mapped[str | None] = mapped_column(
        String(12), ForeignKey("admin_area.code", ondelete="SET NULL"), index=True
    )
    name_zh: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str | None] = mapped_column(Text)
    households: Mapped[int | None] = mapped_column(Integer)
    synthetic: Mapped[bool] = mapped_column(Boolean, server_default="false")
    source: Mapped[str | None] = mapped_column(Text)
    area_km2: Mapped[float | None] = mapped_column(Float)
    geom: Mapped[object] = mapped_column(Geometry("MULTIPOLYGON", srid=4326, spatial_index=False))
    updated_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())


class User(Base):
    """A person (or service) who signs in; ``scope`` lists the admin-area or grid codes they own."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    scope: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{*}")
    disabled: Mapped[bool] = mapped_column(Boolean, server_default="false")
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored. ``scope`` may narrow the user's scope."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(Text)
    scope: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(_now())
    expires_at: Mapped[datetime | None] = mapped_column(_now())
    revoked_at: Mapped[datetime | None] = mapped_column(_now())


class AuditLog(Base):
    """Who did what, when, and under which scope."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(_now(), server_default=func.now(), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    user_name: Mapped[str | None] = mapped_column(Text)
    user_scope: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    action: Mapped[str] = mapped_column(Text, index=True)
    object_type: Mapped[str | None] = mapped_column(Text)
    object_id: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, object] | None] = mapped_column(JSONB)


class AppMeta(Base):
    """Small key/value facts about this installation (demo data version, …)."""

    __tablename__ = "app_meta"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(_now(), server_default=func.now())
