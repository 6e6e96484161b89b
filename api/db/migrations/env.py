"""Alembic environment: the URL comes from the caller (``api.db.migrate``) or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from api.db.models import Base, include_object

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from api.db import database_url  # noqa: PLC0415
        from api.settings import get_settings  # noqa: PLC0415

        url = database_url(get_settings(), start=True)
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
