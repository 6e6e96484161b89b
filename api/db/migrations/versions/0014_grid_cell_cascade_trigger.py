"""``grid_cell`` loses its foreign key to ``grid_layout``; a trigger deletes a layout's cells.

The foreign key checked every inserted cell against its layout, one ``FOR KEY SHARE`` lookup a
row: storing a league layout's 2.4 million cells took 26 s per million rows instead of 7 s, and
the demo stores two (≈ 100 s of every fresh ``make run`` and test session). The cells only ever
come from the code that has just created (or cloned) their layout, in the same transaction, and
``grid_cell.grid_id`` has never had a foreign key for the same reason. What the key still gave —
a deleted layout takes its cells with it — is kept by an ``AFTER DELETE`` trigger.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DO $$
        DECLARE fk text;
        BEGIN
            SELECT conname INTO fk FROM pg_constraint
             WHERE conrelid = 'grid_cell'::regclass AND contype = 'f'
               AND confrelid = 'grid_layout'::regclass;
            IF fk IS NOT NULL THEN
                EXECUTE format('ALTER TABLE grid_cell DROP CONSTRAINT %I', fk);
            END IF;
        END $$;

        CREATE FUNCTION grid_layout_drop_cells() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM grid_cell WHERE layout_id = OLD.id;
            RETURN NULL;
        END $$;

        CREATE TRIGGER grid_layout_drop_cells AFTER DELETE ON grid_layout
            FOR EACH ROW EXECUTE FUNCTION grid_layout_drop_cells();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER grid_layout_drop_cells ON grid_layout;
        DROP FUNCTION grid_layout_drop_cells();
        DELETE FROM grid_cell c
         WHERE NOT EXISTS (SELECT 1 FROM grid_layout l WHERE l.id = c.layout_id);
        ALTER TABLE grid_cell ADD FOREIGN KEY (layout_id) REFERENCES grid_layout (id)
            ON DELETE CASCADE;
        """
    )
