"""Indexes under the foreign keys that pointed at staff, devices and layouts without one.

Deleting a staff member (or a device, or a layout that others were cloned from) made
PostgreSQL scan every referencing table once per deleted row to apply ``ON DELETE SET NULL``:
reloading the demo's 9,792 synthetic staff scanned ``grid`` and ``alert_point`` ≈ 10,000 times
each, minutes of work that an index turns into lookups.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_grid_leader": "grid (leader_id)",
    "ix_alert_point_staff": "alert_point (staff_id)",
    "ix_incident_staff": "incident (staff_id)",
    "ix_incident_device": "incident (device_id)",
    "ix_dispatch_staff": "dispatch (staff_id)",
    "ix_dispatch_device": "dispatch (device_id)",
    "ix_grid_layout_cloned_from": "grid_layout (cloned_from)",
}


def upgrade() -> None:
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {target}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
