"""Coverage in the database: cell_visit upkeep, per-layout materialisation, metrics, reports."""
