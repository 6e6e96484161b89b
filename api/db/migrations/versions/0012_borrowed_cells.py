"""A clone's grids borrow the fine cells of the grids they were cloned from.

Cloning the league's patrol layout copied its 2.46 million ``grid_cell`` rows: 28–38 s, most of
it a foreign-key check and two index insertions per row. A clone of an active or retired layout
(neither ever changes its cells) now records, per grid, the grid whose cells it shares
(``cells_from``); an edit gives the village's grids cells of their own (and clears the column);
the coverage engine reads own and borrowed cells alike (``api.layouts.LAYOUT_CELLS``), also
after the draft is activated. The foreign key keeps a lender from being deleted under its
borrowers (the demo's reload copies the cells to them first).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE grid ADD COLUMN cells_from integer REFERENCES grid (id)")
    # deleting a grid looks up its borrowers through this index, not a scan of ``grid``
    op.execute("CREATE INDEX ix_grid_cells_from ON grid (cells_from) WHERE cells_from IS NOT NULL")


def downgrade() -> None:
    # a borrowing draft keeps its cells: copied before the column goes
    op.execute(
        "INSERT INTO grid_cell (layout_id, h3, grid_id) "
        "SELECT g.layout_id, c.h3, g.id FROM grid g JOIN grid_cell c ON c.grid_id = g.cells_from "
        "WHERE g.cells_from IS NOT NULL"
    )
    op.execute("DROP INDEX ix_grid_cells_from")
    op.execute("ALTER TABLE grid DROP COLUMN cells_from")
