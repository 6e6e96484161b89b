"""Redraws: grid lineage between layouts (old code → new code with area shares).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- how a layout's grids descend from the grids of the layout it was drawn from:
        -- share = part of the old grid's area that went to the new grid
        CREATE TABLE grid_lineage (
            layout_id   integer NOT NULL REFERENCES grid_layout (id) ON DELETE CASCADE,
            from_layout integer NOT NULL REFERENCES grid_layout (id) ON DELETE CASCADE,
            old_code    varchar(15) NOT NULL,
            new_code    varchar(15) NOT NULL,
            area_share  double precision NOT NULL CHECK (area_share > 0 AND area_share <= 1.000001),
            PRIMARY KEY (layout_id, old_code, new_code)
        );
        CREATE INDEX ix_grid_lineage_new ON grid_lineage (layout_id, new_code);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE grid_lineage")
