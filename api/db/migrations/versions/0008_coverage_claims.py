"""Coverage dirty marks are claimed in a short transaction, not deleted inside the recompute.

The updater used to claim (device, day) marks by deleting them inside its long recompute
transaction; ingest's ``INSERT … ON CONFLICT`` on the same marks then waited on those
uncommitted deletes, so GPS acks stalled for the length of a coverage step. Now a claim stamps
``claimed_at`` and commits at once; a fix that arrives while its mark is claimed sets
``remarked`` so the mark survives the recompute's release; a claim older than the stale limit
(a crashed worker) can be taken again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE coverage_dirty
            ADD COLUMN claimed_at timestamptz,
            ADD COLUMN remarked   boolean NOT NULL DEFAULT false;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE coverage_dirty DROP COLUMN claimed_at, DROP COLUMN remarked;
        """
    )
