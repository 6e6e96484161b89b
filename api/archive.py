"""Retention and archive: old ``position`` day partitions → GeoParquet, then dropped.

Layout: ``<root>/position/day=YYYY-MM-DD/county=XXXXXX/part-<run>.parquet`` (hive style), one
row per fix with the columns of ``position`` and the point as WKB in EPSG:4326 with GeoParquet
1.1 metadata; ``county`` is the device's home county (``unknown`` without one). Files are sorted
by (device, time) so a track read prunes row groups by their statistics.

Archiving a day (one transaction): lock the partition against writes, export it to a staging
directory, check the rows written equal the rows in the partition, ``DETACH`` + ``DROP`` it, move
the files into place, commit. Any error rolls back: nothing dropped, staging removed. A re-run is
a no-op for archived days; rows already in the archive (a commit that failed after the move) are
not written twice. A day whose coverage (``cell_visit``) is not up to date is refused.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from psycopg import AsyncConnection, sql
from pyproj import CRS

from api.ingest.partitions import existing, partition_name
from api.progress import NullProgress, Progress
from api.settings import RetentionSettings

_CSV_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("county", pa.string()),
    ("device_id", pa.int32()),
    ("t_us", pa.int64()),
    ("lat", pa.float64()),
    ("lon", pa.float64()),
    ("x", pa.float64()),
    ("y", pa.float64()),
    ("speed", pa.float32()),
    ("course", pa.float32()),
    ("altitude", pa.float32()),
    ("accuracy", pa.float32()),
    ("battery", pa.float32()),
    ("received_us", pa.int64()),
    ("protocol", pa.string()),
    ("extras", pa.string()),
]
_EXPORT = """
    SELECT coalesce(left(d.home_village, 6), 'unknown'), p.device_id,
           (extract(epoch FROM p.fix_time) * 1000000)::bigint, p.lat, p.lon,
           ST_X(p.geom), ST_Y(p.geom), p.speed, p.course, p.altitude, p.accuracy, p.battery,
           (extract(epoch FROM p.received_at) * 1000000)::bigint, p.protocol, p.extras::text
      FROM {table} p LEFT JOIN device d ON d.id = p.device_id
     ORDER BY 1, 2, 3
"""
UTC_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("device_id", pa.int32()),
        ("fix_time", UTC_TS),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("speed", pa.float32()),
        ("course", pa.float32()),
        ("altitude", pa.float32()),
        ("accuracy", pa.float32()),
        ("battery", pa.float32()),
        ("received_at", UTC_TS),
        ("protocol", pa.string()),
        ("extras", pa.string()),
        ("geometry", pa.binary()),
    ]
)
_WGS84_PROJJSON = CRS.from_epsg(4326).to_json_dict()  # GeoParquet: x = lon, y = lat
GEO_METADATA = {
    b"geo": json.dumps(
        {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {
                "geometry": {
                    "encoding": "WKB",
                    "geometry_types": ["Point"],
                    "crs": _WGS84_PROJJSON,
                    "edges": "planar",
                }
            },
        }
    ).encode()
}
_ROW_GROUP = 128 * 1024
_KEY_SHIFT = 40  # device id << 40 | µs into the UTC day (a day is < 2^37 µs)


class ArchiveError(ValueError):
    """A day cannot be archived (coverage pending, counts differ …); nothing was dropped."""


def day_dir(root: Path, day: date) -> Path:
    return root / "position" / f"day={day:%Y-%m-%d}"


def archived_days(root: Path) -> list[date]:
    """UTC days with archived fixes."""
    base = root / "position"
    if not base.is_dir():
        return []
    return sorted(
        date.fromisoformat(p.name[4:])
        for p in base.glob("day=*")
        if any(p.glob("county=*/*.parquet"))
    )


def _point_wkb(x: np.ndarray, y: np.ndarray) -> pa.Array:
    """ISO WKB points (little endian), 21 bytes each, from exact coordinates."""
    rec = np.zeros(len(x), dtype=[("o", "u1"), ("k", "<u4"), ("x", "<f8"), ("y", "<f8")])
    rec["o"], rec["k"], rec["x"], rec["y"] = 1, 1, x, y
    offsets = pa.array(np.arange(len(x) + 1, dtype=np.int32) * 21)
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(x), [None, offsets.buffers()[1], pa.py_buffer(rec.tobytes())]
    )


def _to_archive(batch: pa.RecordBatch) -> pa.Table:
    col = batch.column
    arrays = [
        col("device_id"),
        col("t_us").cast(UTC_TS),
        col("lat"), col("lon"), col("speed"), col("course"), col("altitude"),
        col("accuracy"), col("battery"),
        col("received_us").cast(UTC_TS),
        col("protocol"), col("extras"),
        _point_wkb(col("x").to_numpy(), col("y").to_numpy()),
    ]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def fixes_table(
    device: np.ndarray, t_us: np.ndarray, lat: np.ndarray, lon: np.ndarray, *, protocol: str
) -> pa.Table:
    """Fixes (sorted by device and time) in the archive's schema; the optional columns empty."""
    n = len(device)
    empty = pa.nulls(n, pa.float32())
    arrays = [
        pa.array(device, pa.int32()), pa.array(t_us, pa.int64()).cast(UTC_TS),
        pa.array(lat, pa.float64()), pa.array(lon, pa.float64()),
        empty, empty, empty, empty, empty,
        pa.array(t_us, pa.int64()).cast(UTC_TS), pa.array([protocol] * n, pa.string()),
        pa.nulls(n, pa.string()), _point_wkb(np.asarray(lon), np.asarray(lat)),
    ]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write_fixes(path: Path, table: pa.Table) -> None:
    """One GeoParquet file of the archive's schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table.replace_schema_metadata(GEO_METADATA), path, compression="zstd",
        row_group_size=_ROW_GROUP,
    )  # fmt: skip


def _keys(device: np.ndarray, t_us: np.ndarray, day: date) -> np.ndarray:
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000
    return (device.astype(np.int64) << _KEY_SHIFT) | (t_us.astype(np.int64) - start)


def _archived_keys(root: Path, day: date) -> np.ndarray | None:
    folder = day_dir(root, day)
    if not folder.is_dir():
        return None
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(
        columns=["device_id", "fix_time"]
    )
    t_us = table.column("fix_time").cast(pa.int64()).to_numpy()
    return np.sort(_keys(table.column("device_id").to_numpy(), t_us, day))


def write_geoparquet(csv_path: Path, out_dir: Path, day: date, *, skip: np.ndarray | None) -> int:
    """CSV export of one day (sorted by county, device, time) → one file per county under
    ``out_dir/county=…/``; rows whose key is in ``skip`` are left out. Returns rows written."""
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(
            column_names=[n for n, _ in _CSV_COLUMNS], block_size=32 << 20
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict(_CSV_COLUMNS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    writers: dict[str, pq.ParquetWriter] = {}
    name = f"part-{uuid.uuid4().hex[:12]}.parquet"
    written = 0
    try:
        for batch in reader:
            if skip is not None and len(skip):
                keys = _keys(
                    batch.column("device_id").to_numpy(), batch.column("t_us").to_numpy(), day
                )
                at = np.clip(np.searchsorted(skip, keys), 0, len(skip) - 1)
                batch = batch.filter(pa.array(skip[at] != keys))  # noqa: PLW2901
            county = batch.column("county").to_numpy(zero_copy_only=False)
            cuts = np.flatnonzero(county[1:] != county[:-1]) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(county)], strict=True):
                if hi <= lo:
                    continue
                key = str(county[lo])
                if key not in writers:
                    folder = out_dir / f"county={key}"
                    folder.mkdir(parents=True, exist_ok=True)
                    writers[key] = pq.ParquetWriter(
                        folder / name, SCHEMA.with_metadata(GEO_METADATA), compression="zstd"
                    )
                writers[key].write_table(_to_archive(batch.slice(lo, hi - lo)), _ROW_GROUP)
                written += hi - lo
    finally:
        for writer in writers.values():
            writer.close()
    return written


def _rows_in(folder: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("county=*/*.parquet"))


async def export_partition(
    conn: AsyncConnection[Any], day: date, out_dir: Path, *, skip: np.ndarray | None = None
) -> int:
    """Write one day partition's rows as GeoParquet under ``out_dir``; returns rows written."""
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    csv_path = out_dir / ".export.csv"
    query = sql.SQL(_EXPORT).format(table=sql.Identifier(partition_name(day)))
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)
    try:
        with csv_path.open("wb") as out:
            async with conn.cursor() as cur, cur.copy(statement) as copy:
                async for data in copy:
                    out.write(bytes(data))
        if csv_path.stat().st_size == 0:  # an empty partition (created ahead, never written)
            return 0
        return await asyncio.to_thread(write_geoparquet, csv_path, out_dir, day, skip=skip)
    finally:
        csv_path.unlink(missing_ok=True)


@dataclass
class DayResult:
    day: date
    rows: int
    written: int = 0
    status: str = "planned"  # planned, archived, already, empty


@dataclass
class ArchiveReport:
    days: list[DayResult] = field(default_factory=list)
    purged: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{d.day}  {d.status:<9} {d.rows:>12,} rows  {d.written:>12,} written"
               for d in self.days]  # fmt: skip
        out += [f"{table:<20} {n:>12,} rows deleted" for table, n in self.purged.items()]
        return out or ["nothing to archive"]


async def pending_coverage(conn: AsyncConnection[Any], day: date) -> int:
    """Dirty coverage marks on the local days a UTC day's fixes feed (that day and the next)."""
    row = await (
        await conn.execute(
            "SELECT count(*) FROM coverage_dirty WHERE day BETWEEN %s AND %s",
            (day, day + timedelta(days=1)),
        )
    ).fetchone()
    return int(row[0]) if row else 0


async def archive_day(conn: AsyncConnection[Any], root: Path, day: date) -> DayResult:
    """Export one day partition, verify, detach and drop it (all or nothing)."""
    table = sql.Identifier(partition_name(day))
    staging = root / "position" / f".staging-{uuid.uuid4().hex}"
    try:
        async with conn.transaction():
            await conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table))
            count = await (
                await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            ).fetchone()
            rows = int(count[0]) if count else 0
            if pending := await pending_coverage(conn, day):
                raise ArchiveError(
                    f"{day}: {pending} device-days of coverage pending; "
                    "run 'gridpatrol coverage update' first (or archive --update-coverage)"
                )
            skip = await asyncio.to_thread(_archived_keys, root, day)
            written = await export_partition(conn, day, staging, skip=skip)
            on_disk = await asyncio.to_thread(_rows_in, staging)
            skipped = rows - written
            if on_disk != written or (skipped and (skip is None or skipped > len(skip))):
                raise ArchiveError(
                    f"{day}: {rows} rows in the partition, {on_disk} written, {skipped} skipped"
                )
            await conn.execute(sql.SQL("ALTER TABLE position DETACH PARTITION {}").format(table))
            await conn.execute(sql.SQL("DROP TABLE {}").format(table))
            await asyncio.to_thread(_move_into_place, staging, day_dir(root, day))
        return DayResult(day, rows, written, "archived" if rows else "empty")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, target: Path) -> None:
    for f in sorted(staging.glob("county=*/*.parquet")):
        folder = target / f.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        f.rename(folder / f.name)


def default_before(policy: RetentionSettings) -> date:
    return datetime.now(UTC).date() - timedelta(days=policy.position_hot_days)


async def archive(
    conn: AsyncConnection[Any],
    root: Path,
    *,
    before: date,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ArchiveReport:
    """Archive every ``position`` day partition of a UTC day before ``before``."""
    report = ArchiveReport()
    days = sorted(d for d in await existing(conn) if d < before)
    for day in days:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(partition_name(day)))
        row = await (await conn.execute(query)).fetchone()
        report.days.append(DayResult(day, int(row[0]) if row else 0))
    if dry_run:
        return report
    task = (progress or NullProgress()).task("归档 archive position days", len(days))
    for i, day in enumerate(days):
        report.days[i] = await archive_day(conn, root, day)
        task.advance()
    return report


PURGES = {  # table → (time column, extra condition, the policy field)
    "position_rejected": ("received_at", "", "rejected_days"),
    "cell_visit": ("day", "", "aggregate_days"),
    "device_day": ("day", "", "aggregate_days"),
    "grid_visit": ("day", "", "aggregate_days"),
    "grid_visit_day": ("day", "", "aggregate_days"),
    "audit_log": ("at", "", "audit_days"),
    "jt808_command": ("sent_at", "", "jt808_command_days"),
    "notification": ("created_at", " AND delivered_at IS NOT NULL", "notification_days"),
}


async def purge(
    conn: AsyncConnection[Any], policy: RetentionSettings, *, dry_run: bool = False
) -> dict[str, int]:
    """Delete rows older than each table's policy (0 = kept forever); counts per table."""
    out: dict[str, int] = {}
    now = datetime.now(UTC)
    for table, (column, extra, days_field) in PURGES.items():
        days = int(getattr(policy, days_field))
        if days == 0:
            continue
        where = sql.SQL("{} < %s" + extra).format(sql.Identifier(column))
        cutoff = now - timedelta(days=days)
        if dry_run:
            query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table), where)
            row = await (await conn.execute(query, (cutoff,))).fetchone()
            out[table] = int(row[0]) if row else 0
        else:
            query = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table), where)
            out[table] = (await conn.execute(query, (cutoff,))).rowcount
    return out


# --------------------------------------------------------------------------------- reading


def read_archived(root: Path, device_id: int, start: datetime, end: datetime) -> pa.Table | None:
    """Archived fixes of one device in [start, end), sorted by time, or None when no UTC day of
    the window is archived."""
    first = start.astimezone(UTC).date()
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    folders = [day_dir(root, first + timedelta(days=k)) for k in range((last - first).days + 1)]
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        return None
    f = (
        (ds.field("device_id") == device_id)
        & (ds.field("fix_time") >= start)
        & (ds.field("fix_time") < end)
    )
    tables = [
        ds.dataset(folder, format="parquet", partitioning="hive").to_table(
            filter=f, columns=SCHEMA.names
        )
        for folder in folders
    ]
    return pa.concat_tables(tables).sort_by("fix_time")
