"""A scheduled layout activation records its scheduler, so the switch is attributed and re-checked.

``POST /layouts/{id}/activate`` with a future ``effective_from`` used to store only the time; the
periodic job then activated the draft as SYSTEM, without the scope check an immediate activation
makes. Now scheduling checks the scope like an immediate activation and stores the scheduler (user
id and name, role and effective scope at the time) and the draft's version; when the time comes the
job re-checks that user (still enabled, still allowed to activate, the layout's area still inside
the user's scope narrowed by the recorded one) and the version (an edit after scheduling needs a new
schedule), and audits the activation — or the refusal — in the scheduler's name.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE grid_layout
            ADD COLUMN scheduled_by_id    integer REFERENCES users (id) ON DELETE SET NULL,
            ADD COLUMN scheduled_by       text,
            ADD COLUMN scheduled_role     varchar(16),
            ADD COLUMN scheduled_scope    text[],
            ADD COLUMN scheduled_at       timestamptz,
            ADD COLUMN scheduled_version  integer;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE grid_layout
            DROP COLUMN scheduled_version,
            DROP COLUMN scheduled_at,
            DROP COLUMN scheduled_scope,
            DROP COLUMN scheduled_role,
            DROP COLUMN scheduled_by,
            DROP COLUMN scheduled_by_id;
        """
    )
