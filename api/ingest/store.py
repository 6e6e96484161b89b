"""Store a batch of fixes durably, once: filters → COPY → set-based insert, one transaction.

Every path (OsmAnd single fixes through the group-commit writer, JT/T 808, batch uploads,
files) ends here. Good fixes go into the partitioned ``position`` table with
``ON CONFLICT DO NOTHING`` (the primary key is (device, fix time), so a retried fix is a
duplicate, never a second row): a small group (a group commit of single fixes) by one INSERT
from arrays with the whole transaction pipelined — two round trips, where each statement
waiting for its answer took a dozen and doubled the commit time; a larger batch by binary
COPY, straight into ``position`` or through a session staging table. Refused fixes go to
``position_rejected`` with their reason; ``ingest_counter`` and what follows from the stored
fixes — the *sinks* registered with the ``Ingestor`` (``api.ingest.sinks``: live state,
coverage marks, arrivals) — are written in the same transaction. Nothing is half-written.

Before any of that, every column is range-checked against its database type
(``column_problems``): a value the database cannot hold makes that fix ``unparsable`` (naming
the field), never a failed transaction. Day partitions are made after the filters, for the days
of the fixes that passed them, inside the accepted time window. OsmAnd fixes (protocol
``osmand``) are authenticated here against the device's key hash: a device with a key must
present it (else ``unauthenticated``); a legacy device without one is stored unauthenticated
(unless ``osmand_require_key``), and only authenticated fixes may mark an arrival. Unknown
devices refused from a network ``source`` are counted per source and 10-minute bucket in
``ingest_refusal`` instead of one quarantine row each.
"""

from __future__ import annotations

import hmac
import io
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from numpy.typing import NDArray
from psycopg import AsyncConnection, errors, sql

from api.ingest import partitions
from api.ingest.copybin import COLUMNS as COPY_COLUMNS
from api.ingest.copybin import OPTIONAL, encode_positions
from api.ingest.filters import (
    CODE,
    DUPLICATE,
    FIELD_OF,
    REASONS,
    STORED,
    Limits,
    check_fixes,
    mark_duplicates,
    mark_jumps,
)
from api.ingest.fixes import (
    MAX_TIME_US,
    MIN_TIME_US,
    PROBLEMS,
    FixBatch,
    FixError,
    column_problems,
)
from api.ingest.registry import CRS_CODES, DeviceRegistry, Resolved, key_hash
from api.ingest.sinks import STANDARD_SINKS, Sink, StoredFixes
from api.settings import IngestSettings
from gis.crs import to_wgs84
from gis.units import METRES_PER_DEGREE

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_position (LIKE position INCLUDING DEFAULTS)
    ON COMMIT DELETE ROWS
"""
MOVE = "INSERT INTO position SELECT * FROM staging_position ON CONFLICT DO NOTHING"
# A group this small (the group commit of single-fix protocols) is written with one INSERT
# from arrays and every statement of its transaction pipelined: BEGIN … COMMIT in two round
# trips instead of a dozen. Larger batches are COPYed (binary), which is faster per row.
PIPELINE_MAX = 500
INSERT_ROWS = """
INSERT INTO position (device_id, fix_time, lat, lon, geom, speed, course, altitude, accuracy,
                      battery, received_at, protocol, extras)
SELECT d, 'epoch'::timestamptz + t * interval '1 microsecond', la, lo,
       ST_SetSRID(ST_MakePoint(lo, la), 4326), nullif(sp, 'NaN'), nullif(co, 'NaN'),
       nullif(al, 'NaN'), nullif(ac, 'NaN'), nullif(ba, 'NaN'),
       'epoch'::timestamptz + %(received)s * interval '1 microsecond', %(protocol)s, ex::jsonb
  FROM unnest(%(device)s::int[], %(t)s::bigint[], %(lat)s::float8[], %(lon)s::float8[],
              %(speed)s::real[], %(course)s::real[], %(altitude)s::real[], %(accuracy)s::real[],
              %(battery)s::real[], %(extras)s::text[])
       AS u(d, t, la, lo, sp, co, al, ac, ba, ex)
ON CONFLICT DO NOTHING
"""
# A batch this large first tries one COPY straight into the partitioned table (inside a
# savepoint); only when a key already exists does it take the staging path.
DIRECT_COPY_MIN = 2000
COPY_POSITION = f"COPY position ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)"
COPY_STAGING = f"COPY staging_position ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)"
COUNT = """
INSERT INTO ingest_counter (day, protocol, outcome, n)
SELECT (now() AT TIME ZONE 'UTC')::date, %(protocol)s, o, n
  FROM unnest(%(outcomes)s::text[], %(counts)s::bigint[]) AS u(o, n)
ON CONFLICT (day, protocol, outcome) DO UPDATE SET n = ingest_counter.n + EXCLUDED.n
"""
REJECT_COLUMNS = {  # position_rejected's columns written here, with their array types
    "protocol": "text",
    "reason": "text",
    "field": "text",
    "row_no": "int",
    "identifier": "text",
    "device_id": "int",
    "fix_time": "timestamptz",
    "lat": "float8",
    "lon": "float8",
    "raw": "text",
}

# refusals counted in aggregate: per protocol, source address and 10-minute bucket
REFUSALS = """
INSERT INTO ingest_refusal (bucket, protocol, source, reason, n)
SELECT to_timestamp(floor(extract(epoch FROM now()) / 600) * 600), %(protocol)s, s, r, n
  FROM unnest(%(source)s::text[], %(reason)s::text[], %(n)s::bigint[]) AS u(s, r, n)
ON CONFLICT (bucket, protocol, source, reason) DO UPDATE SET n = ingest_refusal.n + EXCLUDED.n
"""
INT4_MAX = 2**31 - 1

REJECT_ROWS = sql.SQL("INSERT INTO position_rejected ({}) SELECT * FROM unnest({})").format(
    sql.SQL(", ").join(map(sql.Identifier, REJECT_COLUMNS)),
    sql.SQL(", ").join(sql.SQL(f"%s::{kind}[]") for kind in REJECT_COLUMNS.values()),
)


@asynccontextmanager
async def _storing(conn: AsyncConnection[Any], *, pipelined: bool) -> AsyncIterator[None]:
    """The storing transaction. Pipelined, its statements are sent without waiting for each
    answer; reading a result (or the end) is what waits."""
    if pipelined:
        async with conn.pipeline(), conn.transaction():
            yield
    else:
        async with conn.transaction():
            yield


@dataclass
class StoreResult:
    """What became of each fix of a batch, and the counts per outcome; ``errors`` names the
    fixes refused because a value does not fit its column (row, field, why)."""

    outcome: NDArray[np.int8]
    stored: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[FixError] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"stored": self.stored, "duplicate": self.duplicate, **self.rejected}


def _csv(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


def _float(values: NDArray[np.float64]) -> pa.Array:
    finite = np.where(np.isfinite(values), values, np.nan)
    return pa.array(finite, type=pa.float64(), from_pandas=True)  # NaN, ±inf → NULL


def _text(value: object) -> str | None:
    """Text a ``text`` column can hold (NUL shown as U+FFFD), None kept."""
    return None if value is None else str(value).replace("\x00", "\ufffd")


def _int4(value: int | None) -> int | None:
    return value if value is not None and -INT4_MAX <= value <= INT4_MAX else None


@dataclass
class Ingestor:
    """Turns FixBatches into stored positions; one per process, shared by every protocol."""

    settings: IngestSettings
    registry: DeviceRegistry = field(default_factory=DeviceRegistry)
    bbox: tuple[float, float, float, float] | None = None
    _bbox_checked: float = 0.0
    _partitions: set[date] = field(default_factory=set)
    osmand_require_key: bool = False  # refuse OsmAnd fixes of legacy devices (no key issued)
    # what follows from stored fixes, run in the storing transaction (api.ingest.sinks)
    sinks: tuple[Sink, ...] = field(default_factory=lambda: STANDARD_SINKS)

    async def refresh_service_area(
        self, conn: AsyncConnection[Any], *, force: bool = False
    ) -> None:
        """Service area = extent of the loaded admin areas + margin (re-read every minute)."""
        if not self.settings.service_area:
            self.bbox = None
            return
        if not force and time.monotonic() - self._bbox_checked < 60:
            return
        row = await (
            await conn.execute(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                "FROM (SELECT ST_Extent(geom) AS e FROM admin_area) x"
            )
        ).fetchone()
        self._bbox_checked = time.monotonic()
        if row is None or row[0] is None:
            self.bbox = None
            return
        margin_lat = self.settings.service_area_margin_km * 1000.0 / METRES_PER_DEGREE
        mid = np.radians((row[1] + row[3]) / 2)
        margin_lon = margin_lat / max(np.cos(mid), 0.1)
        self.bbox = (
            row[0] - margin_lon,
            row[1] - margin_lat,
            row[2] + margin_lon,
            row[3] + margin_lat,
        )

    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            now_us=int(time.time() * 1e6),
            max_future_s=s.max_future_s,
            max_age_s=s.max_age_days * 86_400.0,
            max_speed_mps=s.max_speed_mps,
            max_accuracy_m=s.max_accuracy_m,
            bbox=self.bbox,
        )

    async def prepare(self, conn: AsyncConnection[Any], batch: FixBatch) -> None:  # noqa: ARG002
        """Work done before ``store``, outside any transaction: refresh the service area.

        The day partitions are made by ``store`` itself, once the filters have run, for the days
        of the fixes that passed them only (a refused fix's bogus date creates no table).
        """
        await self.refresh_service_area(conn)

    async def store(
        self,
        conn: AsyncConnection[Any],
        batch: FixBatch,
        *,
        protocol: str,
        errors: Sequence[FixError] = (),
        source_crs: str | None = None,
        refusals: Mapping[tuple[str, str], int] | None = None,
    ) -> StoreResult:
        """Filter and store ``batch`` (plus quarantine ``errors`` from parsing) atomically.

        Coordinates are converted to WGS-84 from ``source_crs`` when given (a file declared in
        GCJ-02, say), else from each device's declared CRS. Call it outside any transaction:
        the partitions for the days of the fixes that pass the filters are made first, in their
        own. ``refusals`` ((source, reason) → count) are requests refused before parsing (rate
        limits), counted in ``ingest_refusal`` in the same transaction.
        """
        await self.refresh_service_area(conn)
        problem = column_problems(batch)
        unreadable = problem != None  # noqa: E711 - elementwise on objects
        identifiers = batch.device
        if unreadable.any():  # the lookup itself must not see what the database cannot hold
            identifiers = batch.device.copy()
            identifiers[unreadable & (problem == "device")] = ""
        osmand = protocol == "osmand"
        resolved = await self.registry.resolve(conn, identifiers, keys=osmand)
        lat, lon = batch.lat.copy(), batch.lon.copy()
        if source_crs is not None:
            lon, lat = to_wgs84(lon, lat, source_crs)
        else:
            for code in np.unique(resolved.crs):
                if CRS_CODES[code] in ("gcj02", "bd09"):
                    sel = resolved.crs == code
                    lon[sel], lat[sel] = to_wgs84(lon[sel], lat[sel], CRS_CODES[code])
        limits = self.limits()
        outcome = check_fixes(
            resolved.device_id, resolved.enabled, batch.time_us, lat, lon, batch.accuracy, limits
        )
        outcome[unreadable] = CODE["unparsable"]
        authenticated = (
            self._authenticate(batch, resolved, outcome) if osmand else np.ones(len(batch), bool)
        )
        order = np.lexsort((batch.time_us, resolved.device_id))
        mark_duplicates(resolved.device_id, batch.time_us, outcome, order=order)
        mark_jumps(
            resolved.device_id,
            batch.time_us,
            lat,
            lon,
            outcome,
            max_speed_mps=limits.max_speed_mps,
            last=resolved.last,
            order=order,
        )
        result = StoreResult(outcome=outcome)
        result.errors = [
            FixError(row=int(batch.row[i]), reason=PROBLEMS[problem[i]], field=problem[i])
            for i in np.flatnonzero(unreadable)
        ]
        good = np.flatnonzero(outcome == STORED)
        refused = np.flatnonzero(outcome > DUPLICATE)
        fixes = StoredFixes(
            device_id=resolved.device_id[good],
            time_us=batch.time_us[good],
            lat=lat[good],
            lon=lon[good],
            optional={name: getattr(batch, name)[good] for name in OPTIONAL},
            extras=batch.extras[good],
            authenticated=authenticated[good],
        )
        await self._make_partitions(conn, fixes.time_us, limits)
        refused, tally = _aggregated(batch, outcome, refused, refusals)
        pipelined = len(good) < PIPELINE_MAX
        async with _storing(conn, pipelined=pipelined):
            if len(good):
                inserted = await self._insert(conn, fixes, protocol, pipelined)
                result.stored = inserted
                result.duplicate = len(good) - inserted
            result.duplicate += int((outcome == DUPLICATE).sum())
            await self._quarantine(
                conn,
                batch,
                resolved,
                lat,
                lon,
                outcome,
                problem,
                refused,
                protocol,
                errors,
                pipelined=pipelined,
            )
            if tally:
                await conn.execute(
                    REFUSALS,
                    {
                        "protocol": protocol,
                        "source": [k[0] for k in tally],
                        "reason": [k[1] for k in tally],
                        "n": list(tally.values()),
                    },
                )
            refused = np.flatnonzero(outcome > DUPLICATE)  # counted ones included
            codes, numbers = np.unique(outcome[refused], return_counts=True)
            counts = Counter({REASONS[c]: int(n) for c, n in zip(codes, numbers, strict=True)})
            counts["unparsable"] += len(errors)
            result.rejected = {k: v for k, v in counts.items() if v}
            await self._count(conn, protocol, result.counts())
        return result

    async def _make_partitions(
        self, conn: AsyncConnection[Any], time_us: NDArray[np.int64], limits: Limits
    ) -> None:
        """Partitions for the days of the fixes that passed, inside the accepted window."""
        days = partitions.in_window(
            partitions.days_of(time_us),
            now_us=limits.now_us,
            max_age_s=limits.max_age_s,
            max_future_s=limits.max_future_s,
        )
        self._partitions = await partitions.ensure(conn, days, self._partitions)

    def _authenticate(
        self, batch: FixBatch, resolved: Resolved, outcome: NDArray[np.int8]
    ) -> NDArray[np.bool_]:
        """Which OsmAnd fixes are authenticated (their device's key presented, or sent as the
        id); refuses as ``unauthenticated`` the fixes of devices with a key that did not present
        it (and, with ``osmand_require_key``, those of legacy devices without a key)."""
        known = resolved.device_id >= 0
        has_key = np.fromiter(
            (h is not None for h in resolved.key_hash), dtype=bool, count=len(batch)
        )
        authenticated = resolved.by_key & known
        for i in np.flatnonzero(known & has_key & ~authenticated):
            key = batch.key[i]
            authenticated[i] = isinstance(key, str) and hmac.compare_digest(
                key_hash(key), str(resolved.key_hash[i])
            )
        refuse = known & ~authenticated & (has_key | self.osmand_require_key)
        outcome[refuse & (outcome != CODE["unparsable"])] = CODE["unauthenticated"]
        return authenticated

    async def _insert(
        self, conn: AsyncConnection[Any], fixes: StoredFixes, protocol: str, pipelined: bool
    ) -> int:
        """Write the good fixes and what follows from them (live state, coverage marks,
        arrivals); returns how many fixes were new (the rest were duplicates).

        Pipelined (a small group): one INSERT from arrays, sent together with the follow-up
        statements, one round trip for all. Otherwise a binary COPY, straight into ``position``
        when the batch is large and new, else through the staging table.
        """
        received_us = int(time.time() * 1e6)
        if pipelined:
            written = await conn.execute(
                INSERT_ROWS,
                {
                    "device": fixes.device_id.tolist(),
                    "t": fixes.time_us.tolist(),
                    "lat": fixes.lat.tolist(),
                    "lon": fixes.lon.tolist(),
                    **{name: values.tolist() for name, values in fixes.optional.items()},
                    "received": received_us,
                    "protocol": protocol,
                    "extras": fixes.extras.tolist(),
                },
            )
        else:
            payload = encode_positions(
                device_id=fixes.device_id,
                time_us=fixes.time_us,
                lat=fixes.lat,
                lon=fixes.lon,
                optional=fixes.optional,
                extras=fixes.extras,
                received_us=received_us,
                protocol=protocol,
            )
            direct = len(fixes.device_id) >= DIRECT_COPY_MIN
            copied = await self._copy_direct(conn, payload) if direct else None
            inserted = copied if copied is not None else await self._copy_staged(conn, payload)
        for sink in self.sinks:  # what follows from the fixes, in this transaction
            await sink(conn, fixes, protocol)
        if pipelined and written.rowcount < 0:  # no sink read a result: fetch the INSERT's
            await (await conn.execute("SELECT 1")).fetchone()
        return int(written.rowcount) if pipelined else inserted

    async def _copy_direct(self, conn: AsyncConnection[Any], payload: bytes) -> int | None:
        """All rows new (the usual case for a large upload): one COPY, no staging."""
        try:
            async with conn.transaction(), conn.cursor() as cur:
                async with cur.copy(COPY_POSITION) as copy:
                    await copy.write(payload)
                return int(cur.rowcount)
        except errors.UniqueViolation:
            return None

    async def _copy_staged(self, conn: AsyncConnection[Any], payload: bytes) -> int:
        """COPY into the session's staging table, then move what is new; the table empties
        itself at commit (``ON COMMIT DELETE ROWS``)."""
        await conn.execute(STAGING)
        async with conn.cursor() as cur:
            async with cur.copy(COPY_STAGING) as copy:
                await copy.write(payload)
            await cur.execute(MOVE)
            return int(cur.rowcount)

    async def _quarantine(
        self,
        conn: AsyncConnection[Any],
        batch: FixBatch,
        resolved: Resolved,
        lat: NDArray[np.float64],
        lon: NDArray[np.float64],
        outcome: NDArray[np.int8],
        problem: NDArray[np.object_],
        refused: NDArray[np.int64],
        protocol: str,
        errors: Sequence[FixError],
        *,
        pipelined: bool,
    ) -> None:
        """Refused fixes and unparsable records into ``position_rejected`` with their reason:
        an INSERT from arrays in a pipelined (small) group, a CSV COPY otherwise. Every value
        is made storable first (no NUL in text, times and numbers the columns can hold); a key
        sent as the identifier is replaced by the device's identifier, and by ``<key>`` in the
        raw text."""
        if len(refused) == 0 and not errors:
            return
        reasons = [REASONS[c] for c in outcome[refused]]
        n_err = len(errors)
        times = np.r_[batch.time_us[refused], np.zeros(n_err, np.int64)]
        no_time = np.r_[np.zeros(len(refused), bool), np.ones(n_err, bool)]
        no_time |= (times < MIN_TIME_US) | (times > MAX_TIME_US)
        fields = [
            str(problem[i]) if r == "unparsable" and problem[i] is not None else FIELD_OF.get(r)
            for r, i in zip(reasons, refused, strict=True)
        ]
        raws = [_raw(batch, i) for i in refused]
        for k, i in enumerate(refused):
            if resolved.by_key[i]:
                raws[k] = raws[k].replace(str(batch.device[i]), "<key>")
        table = pa.table(
            {
                "protocol": pa.array([protocol] * (len(refused) + n_err)),
                "reason": pa.array(reasons + ["unparsable"] * n_err),
                "field": pa.array([_text(f) for f in [*fields, *(e.field for e in errors)]]),
                "row_no": pa.array(
                    [_int4(r) for r in [*batch.row[refused].tolist(), *(e.row for e in errors)]],
                    type=pa.int64(),
                ),
                "identifier": pa.array(
                    [
                        _text(resolved.identifier[i] if resolved.by_key[i] else batch.device[i])
                        for i in refused
                    ]
                    + [None] * n_err,
                    type=pa.string(),
                ),
                "device_id": pa.array(
                    [int(d) if d >= 0 else None for d in resolved.device_id[refused]]
                    + [None] * n_err,
                    type=pa.int64(),
                ),
                "fix_time": pa.array(
                    np.where(no_time, 0, times), type=pa.timestamp("us", tz="UTC"), mask=no_time
                ),
                "lat": _float(np.r_[lat[refused], np.full(n_err, np.nan)]),
                "lon": _float(np.r_[lon[refused], np.full(n_err, np.nan)]),
                "raw": pa.array([_text(r) for r in [*raws, *(e.raw for e in errors)]]),
            }
        )
        if pipelined:  # COPY cannot run in pipeline mode
            await conn.execute(REJECT_ROWS, [table.column(c).to_pylist() for c in REJECT_COLUMNS])
            return
        columns = ", ".join(REJECT_COLUMNS)
        async with (
            conn.cursor() as cur,
            cur.copy(f"COPY position_rejected ({columns}) FROM STDIN (FORMAT csv)") as copy,
        ):
            await copy.write(_csv(table))

    async def _count(
        self, conn: AsyncConnection[Any], protocol: str, counts: dict[str, int]
    ) -> None:
        items = [(k, v) for k, v in counts.items() if v]
        if not items:
            return
        await conn.execute(
            COUNT,
            {
                "protocol": protocol,
                "outcomes": [k for k, _ in items],
                "counts": [v for _, v in items],
            },
        )


def _aggregated(
    batch: FixBatch,
    outcome: NDArray[np.int8],
    refused: NDArray[np.int64],
    refusals: Mapping[tuple[str, str], int] | None,
) -> tuple[NDArray[np.int64], Counter[tuple[str, str]]]:
    """Unknown devices refused from a network ``source`` are counted per (source, reason),
    not quarantined one row each: returns the refused fixes left to quarantine and the counts
    (with ``refusals`` added)."""
    sourced = batch.source[refused] != None  # noqa: E711 - elementwise on objects
    counted = refused[(outcome[refused] == CODE["unknown_device"]) & sourced]
    tally: Counter[tuple[str, str]] = Counter(refusals or {})
    tally.update((str(batch.source[i]), "unknown_device") for i in counted)
    if len(counted):
        refused = np.setdiff1d(refused, counted)
    return refused, tally


def _raw(batch: FixBatch, i: int) -> str:
    """The payload as received, or a compact rendering of the parsed fix."""
    if batch.raw[i] is not None:
        return str(batch.raw[i])
    return f"device={batch.device[i]} t_us={batch.time_us[i]} lat={batch.lat[i]} lon={batch.lon[i]}"


__all__ = ["CODE", "FIELD_OF", "Ingestor", "StoreResult"]
