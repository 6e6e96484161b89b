"""``gridpatrol`` command line: every command has a one-line purpose in ``--help``."""

from __future__ import annotations

import typer

from api.cli import (
    archive,
    boundaries,
    coverage,
    db,
    demo,
    devices,
    grids,
    incidents,
    ingest,
    jt808,
    layouts,
    reports,
    roads,
    serve,
    simulate,
    users,
)

app = typer.Typer(
    name="gridpatrol",
    help="GridPatrol: 网格化管理与巡逻 · grid management and patrol tracking on PostGIS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db.app, name="db", help="Embedded PostgreSQL+PostGIS cluster and migrations.")
app.add_typer(users.app, name="users", help="Users, roles, data scopes and tokens.")
app.add_typer(demo.app, name="demo", help="Xilingol League demo data.")
app.add_typer(boundaries.app, name="boundaries", help="Import admin-area boundary files.")
app.add_typer(grids.grids_app, name="grids", help="Grid layouts: make, list, activate, assign.")
app.add_typer(
    layouts.app, name="layouts", help="规划调整 Redraw layouts: clone, validate, diff, activate…"
)
app.add_typer(grids.staff_app, name="staff", help="Grid workers, leaders, informants.")
app.add_typer(grids.alerts_app, name="alerts", help="Alert points (报警点): import, siting.")
app.add_typer(coverage.app, name="coverage", help="Coverage per grid: update, show, ranking.")
app.add_typer(devices.app, name="devices", help="Register GPS devices (车载终端), list them.")
app.add_typer(jt808.app, name="jt808", help="JT/T 808 terminals: send commands, stats, reset.")
app.add_typer(
    incidents.app,
    name="incidents",
    help="Incidents: create, list, assign, accept, arrive, clear, cancel, escalate, simulate.",
)
app.add_typer(roads.app, name="roads", help="Road graphs for road ETAs: import OSM, list.")
app.command("ingest", help="Store a track file (gridpatrol ingest FILE), or show 'stats'.")(
    ingest.ingest
)
app.command("serve", help="Serve the API and map pages (and device protocol servers).")(serve.serve)
app.command("run", help="Everything make run does: database, migrations, demo, admin, serve.")(
    serve.run
)
app.command("simulate", help="Simulate 草原110 patrol vehicles and send their fixes.")(
    simulate.simulate
)
app.command("replay", help="Replay a real track file (e.g. the bus AVL CSV) in time order.")(
    simulate.replay
)
app.command("report", help="Coverage report: colour grid map, tables, charts, ranking (file).")(
    reports.report
)
app.command("settings", help="Print the effective settings (secrets hidden).")(serve.show_settings)
app.command("archive", help="Archive old position days to GeoParquet; apply retention.")(
    archive.archive
)


def main() -> None:
    app()
