"""Coverage: cell_visit (layout-independent truth), dirty marks, per-device days, and the
per-layout grid_visit materialisation that reports read.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- per fine H3 cell × device × local (UTC+8) day: what the patrol did there. Layout-free,
        -- so any redraw only re-joins it. Passes: presence intervals (UTC µs), merged ≤ 30 min.
        CREATE TABLE cell_visit (
            device_id  integer NOT NULL,
            day        date NOT NULL,
            h3         bigint NOT NULL,
            first_seen timestamptz NOT NULL,
            last_seen  timestamptz NOT NULL,
            fixes      integer NOT NULL,
            dwell_s    real NOT NULL,
            metres     real NOT NULL,
            sight_only boolean NOT NULL,
            pass_start bigint[] NOT NULL,
            pass_end   bigint[] NOT NULL,
            PRIMARY KEY (device_id, day, h3)
        );
        CREATE INDEX ix_cell_visit_day ON cell_visit USING brin (day);

        -- (device, day) whose cell visits must be recomputed: written by ingest, consumed by
        -- the coverage updater in the same transaction that rewrites the day
        CREATE TABLE coverage_dirty (
            device_id integer NOT NULL,
            day       date NOT NULL,
            marked_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, day)
        );

        -- per device and day: the totals the vehicle ranking reads
        CREATE TABLE device_day (
            device_id  integer NOT NULL,
            day        date NOT NULL,
            fixes      integer NOT NULL,
            dwell_s    real NOT NULL,
            metres     real NOT NULL,
            cells      integer NOT NULL,
            first_seen timestamptz NOT NULL,
            last_seen  timestamptz NOT NULL,
            PRIMARY KEY (device_id, day)
        );

        -- cell_visit ⨝ grid_cell, materialised per layout: per grid × device × day, the cells
        -- seen as a bitmap over the grid's cells (bit i = its i-th cell by h3), sums, visits
        CREATE TABLE grid_visit (
            layout_id   integer NOT NULL REFERENCES grid_layout (id) ON DELETE CASCADE,
            day         date NOT NULL,
            grid_id     integer NOT NULL,
            device_id   integer NOT NULL,
            fixes       integer NOT NULL,
            dwell_s     real NOT NULL,
            metres      real NOT NULL,
            first_seen  timestamptz NOT NULL,
            last_seen   timestamptz NOT NULL,
            seen        bit varying NOT NULL,
            visit_start bigint[] NOT NULL,
            visit_end   bigint[] NOT NULL,
            PRIMARY KEY (layout_id, day, grid_id, device_id)
        );
        CREATE INDEX ix_grid_visit_device ON grid_visit (layout_id, device_id, day);

        -- which (layout, day) are materialised in grid_visit and current
        CREATE TABLE grid_visit_day (
            layout_id integer NOT NULL REFERENCES grid_layout (id) ON DELETE CASCADE,
            day       date NOT NULL,
            built_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (layout_id, day)
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE grid_visit_day;
        DROP TABLE grid_visit;
        DROP TABLE device_day;
        DROP TABLE coverage_dirty;
        DROP TABLE cell_visit;
        """
    )
