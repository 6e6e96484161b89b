"""OsmAnd device keys, and refusals counted in aggregate.

OsmAnd / Traccar fixes carried only a device id: anyone who knew one could post fixes as the
device, and those fixes moved incidents to ``arrived``. Each device now gets an OsmAnd key
(shown once; only its SHA-256 is stored here, unique, so the key itself may serve as the id of
clients that can send nothing else). Devices registered before this revision keep a NULL hash:
they are *legacy* devices whose OsmAnd fixes are stored as unauthenticated (never an arrival)
until an admin issues them a key (``POST /api/v1/devices/{id}/osmand-key``, ``gridpatrol
devices osmand-key``), or refused outright with ``GRIDPATROL_OSMAND_REQUIRE_KEY``.

``ingest_refusal`` counts requests refused before they name a known device (unknown ids, rate
limits) per protocol, source address and 10-minute bucket, instead of one quarantine row each.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE device ADD COLUMN osmand_key_hash varchar(64) UNIQUE;

        CREATE TABLE ingest_refusal (
            bucket   timestamptz NOT NULL,
            protocol text NOT NULL,
            source   text NOT NULL,
            reason   text NOT NULL,
            n        bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (bucket, protocol, source, reason)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE ingest_refusal;
        ALTER TABLE device DROP COLUMN osmand_key_hash;
        """
    )
