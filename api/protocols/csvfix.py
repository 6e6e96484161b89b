"""CSV fixes, vectorised with pyarrow: header aliases, delimiter sniffing, units and time zones.

The header row names the columns; common names are recognised (see ``ALIASES``), columns we do
not map are kept per fix in ``extras``. Times are ISO 8601 (an offset or ``Z`` is honoured; naive
times are local time in ``tz``, default UTC) or unix seconds/milliseconds; a naive time that is
ambiguous or skipped at a daylight-saving change is a bad row, never a guess. Rows with a wrong
field count, no device, time or position are reported with their 1-based physical line number
(quoted fields spanning lines are accounted for); the rest of the file is kept.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from numpy.typing import NDArray

from api.ingest.fixes import FixBatch, FixError
from api.protocols.trackcommon import (
    ParseResult,
    TrackFileError,
    check_tz,
    clean_optional,
    nones,
    range_reasons,
    screen,
    speed_factor,
    times_to_us,
    to_numbers,
)

ALIASES: dict[str, tuple[str, ...]] = {
    "device": (
        *("device", "device_id", "deviceid", "vehicle_id", "vehicleid", "vehicle", "unit_id"),
        *("imei", "tracker", "tracker_id", "terminal", "terminal_id", "id"),
    ),
    "time": (
        *("timestamp_utc", "time_utc", "utc_time", "datetime_utc", "timestamp", "time"),
        *("datetime", "date_time", "fix_time", "gps_time", "recorded_at", "ts", "utc"),
    ),
    "lat": ("lat", "latitude", "lat_deg"),
    "lon": ("lon", "lng", "long", "longitude", "lon_deg"),
    "speed": (
        *("speed", "speed_mps", "speed_m_s", "speed_ms", "speed_kmh", "speed_km_h", "speed_kph"),
        *("speed_knots", "speed_kn", "speed_mph", "speed_raw", "velocity", "spd"),
    ),
    "course": ("course", "heading", "bearing", "direction", "cog"),
    "altitude": ("altitude", "alt", "ele", "elevation", "height", "altitude_m"),
    "accuracy": ("accuracy", "acc", "hacc", "horizontal_accuracy", "accuracy_m"),
    "battery": ("battery", "batt", "battery_level", "bat", "battery_pct"),
}
# a unit spelled in the speed column's name (used unless the caller names one)
NAMED_SPEED_UNITS = {
    **dict.fromkeys(("speed_mps", "speed_m_s", "speed_ms"), "m/s"),
    **dict.fromkeys(("speed_kmh", "speed_km_h", "speed_kph"), "km/h"),
    **dict.fromkeys(("speed_knots", "speed_kn"), "knots"),
    "speed_mph": "mph",
}
_DELIMITERS = (",", ";", "\t", "|")
_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_RARE_CONTROL = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]"


def normalise(name: str) -> str:
    """A header name as matched against ``ALIASES``: lower case, separators as ``_``."""
    out = name.strip().strip('"').lower().lstrip("\ufeff")
    for ch in " -./()[]":
        out = out.replace(ch, "_")
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")


def _unique(names: list[str]) -> list[str]:
    """Header names made unique (``x``, ``x.1`` …) so every column can be read."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def _columns(names: list[str]) -> dict[str, str]:
    """Role → header name of the first matching alias."""
    by_norm: dict[str, str] = {}
    for name in names:
        by_norm.setdefault(normalise(name), name)
    roles = {}
    for role, aliases in ALIASES.items():
        hit = next((a for a in aliases if a in by_norm), None)
        if hit is not None:
            roles[role] = by_norm[hit]
    return roles


class _Lines:
    """Maps the logical CSV rows (a quoted field may span lines) to physical lines and text."""

    def __init__(self, data: bytes, offset: int, *, quoted: bool) -> None:
        buf = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(buf == 10)
        if quoted:  # a newline ends a row only outside quotes: an even number of quotes before
            quotes = np.flatnonzero(buf == 34)
            ends = np.flatnonzero(np.searchsorted(quotes, newlines) % 2 == 0)
        else:
            ends = np.arange(len(newlines))
        self.data = data
        self.line = np.concatenate([[1], ends + 2]).astype(np.int64) + offset
        self.start = np.concatenate([[0], newlines[ends] + 1])
        self.stop = np.concatenate([newlines[ends], [len(data)]])

    def text(self, logical: int) -> str:
        """The source text of logical row ``logical`` (0 = header)."""
        raw = self.data[self.start[logical] : self.stop[logical]]
        return raw.decode("utf-8", errors="replace").rstrip("\r")


def _read(data: bytes, names: list[str], delimiter: str, *, quoted: bool) -> tuple[pa.Table, list]:
    invalid: list[pcsv.InvalidRow] = []

    def keep(row: pcsv.InvalidRow) -> str:
        invalid.append(row)
        return "skip"

    table = pcsv.read_csv(
        io.BytesIO(data),
        read_options=pcsv.ReadOptions(
            use_threads=False, block_size=8 << 20, column_names=names, skip_rows=1
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter,
            invalid_row_handler=keep,
            ignore_empty_lines=False,
            newlines_in_values=quoted,
        ),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    return table, invalid


def _utf8(data: bytes) -> bytes:
    """UTF-8 without a BOM; other encodings are read as Windows-1252 (every byte decodes)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace").encode("utf-8")
    return data


def parse_csv(
    data: bytes,
    *,
    device: str | None = None,
    tz: str = "UTC",
    speed_unit: str | None = None,
) -> ParseResult:
    """Parse a CSV (or semicolon/tab/pipe separated) file of fixes.

    Parameters
    ----------
    data : bytes
        The file; UTF-8 with or without BOM (else read as Windows-1252).
    device : str, optional
        Device for rows without one; required when the file has no device column.
    tz : str
        IANA zone of naive ISO times (default UTC).
    speed_unit : str, optional
        Unit of the speed column (m/s, km/h, knots, mph); default the unit in the column's name
        (``speed_kmh`` …), else m/s.

    Returns
    -------
    ParseResult
        Fixes with ``row`` = physical line number; unmapped columns in ``extras``.

    Raises
    ------
    TrackFileError
        No header with latitude, longitude and time columns, or no device anywhere.
    """
    check_tz(tz)
    data = _utf8(data)
    body = data.lstrip(b"\r\n")
    offset = data[: len(data) - len(body)].count(b"\n")
    header = body.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    delimiter = max(_DELIMITERS, key=header.count)
    names = _unique(next(csv.reader([header], delimiter=delimiter), []))
    roles = _columns(names)
    missing = [r for r in ("lat", "lon", "time") if r not in roles]
    if missing:
        expected = "; ".join(f"{r}: {', '.join(ALIASES[r])}" for r in missing)
        raise TrackFileError(f"CSV header {names} lacks columns for {missing} ({expected})")
    if "device" not in roles and device is None:
        raise TrackFileError("the CSV has no device column: pass device=")
    quoted = b'"' in body
    table, invalid = _read(body, names, delimiter, quoted=quoted)
    lines = _Lines(body, offset, quoted=quoted)
    keep = np.ones(table.num_rows + len(invalid), dtype=bool)
    keep[[r.number - 2 for r in invalid]] = False  # InvalidRow.number: 1-based, header = 1
    logical = np.arange(1, len(keep) + 1)[keep]
    errors = [
        FixError(
            int(lines.line[r.number - 1]),
            f"{r.actual_columns} fields where the header has {r.expected_columns}",
            None,
            r.text,
        )
        for r in invalid
    ]
    blank = np.ones(table.num_rows, dtype=bool)
    for column in table.columns:
        blank &= column.is_null().to_numpy()
    table, logical = table.filter(pa.array(~blank)), logical[~blank]
    unit = speed_unit or NAMED_SPEED_UNITS.get(normalise(roles.get("speed", "")), "m/s")
    factor = speed_factor(unit)
    batch, problems = _columns_to_batch(table, roles, device, tz, factor, delimiter != ",")
    batch.row = lines.line[logical]
    fixes, bad_rows = screen(batch, problems, raw=lambda i: lines.text(int(logical[i])))
    errors = sorted([*errors, *bad_rows], key=lambda e: e.row)
    return ParseResult(fixes=fixes, errors=errors, stopped_at=None, format="csv")


def _column(table: pa.Table, name: str) -> pa.Array:
    return pc.utf8_trim_whitespace(table.column(name).combine_chunks())


def _time_column(table: pa.Table, roles: dict[str, str]) -> tuple[pa.Array, set[str]]:
    """The time column (joined with a separate ``date`` column when it holds times of day),
    and the names of the columns it used."""
    times = _column(table, roles["time"])
    dates = next((c for c in table.column_names if normalise(c) in ("date", "gps_date")), None)
    if dates is not None and dates != roles["time"]:
        first = times.drop_null()[:1]
        if len(first) and pc.match_substring_regex(first, r"^\d{1,2}:\d\d")[0].as_py():
            joined = pc.binary_join_element_wise(_column(table, dates), times, "T")
            return joined, {roles["time"], dates}
    return times, {roles["time"]}


def _columns_to_batch(
    table: pa.Table,
    roles: dict[str, str],
    device: str | None,
    tz: str,
    factor: float,
    decimal_comma: bool,
) -> tuple[FixBatch, list[tuple[str, NDArray[np.object_]]]]:
    n = table.num_rows
    if "device" not in roles:
        devices = np.full(n, device, dtype=object)
    else:
        ids = _column(table, roles["device"])
        if device is not None:
            ids = pc.if_else(pc.equal(pc.utf8_length(ids), 0), device, ids).fill_null(device)
        devices = ids.to_numpy(zero_copy_only=False)
    device_reasons = nones(n)
    device_reasons[[d is None or d == "" for d in devices]] = "missing"
    times, used = _time_column(table, roles)
    time_us, time_reasons = times_to_us(times, tz)

    def numbers(role: str) -> NDArray[np.float64]:
        if role not in roles:
            return np.full(n, np.nan)
        return to_numbers(_column(table, roles[role]), decimal_comma=decimal_comma)

    lat, lon = numbers("lat"), numbers("lon")
    used |= set(roles.values())
    others = [c for c in table.column_names if c not in used]
    batch = FixBatch.from_columns(
        device=devices,
        time_us=time_us,
        lat=lat,
        lon=lon,
        speed=clean_optional(numbers("speed") * factor, 0, np.inf),
        course=clean_optional(numbers("course"), 0, 360),
        altitude=numbers("altitude"),
        accuracy=clean_optional(numbers("accuracy"), 0, np.inf),
        battery=clean_optional(numbers("battery"), 0, 100),
        extras=_extras(table.select(others)) if others else None,
    )
    lat_present = table.column(roles["lat"]).is_valid().to_numpy(zero_copy_only=False)
    lon_present = table.column(roles["lon"]).is_valid().to_numpy(zero_copy_only=False)
    problems = [
        ("device", device_reasons),
        ("time", time_reasons),
        ("lat", range_reasons(lat, lat_present, -90, 90)),
        ("lon", range_reasons(lon, lon_present, -180, 180)),
    ]
    return batch, problems


def _extras(table: pa.Table) -> NDArray[np.object_]:
    """One JSON object text per row of the unmapped columns, built with arrow string kernels.

    Values stay texts (as in the file); empty cells are null. Rows holding rare control
    characters other than tab/CR/LF are serialised by orjson instead.
    """
    parts = []
    rare = np.zeros(table.num_rows, dtype=bool)
    for i, name in enumerate(table.column_names):
        column = table.column(name).combine_chunks()
        matches = pc.match_substring_regex(column, _RARE_CONTROL).fill_null(fill_value=False)
        rare |= matches.to_numpy(zero_copy_only=False)
        for char, escaped in _JSON_ESCAPES:
            column = pc.replace_substring(column, char, escaped)
        value = pc.binary_join_element_wise('"', column, '"', "").fill_null("null")
        key = ("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":"
        parts.append(pc.binary_join_element_wise(key, value, ""))
    text = pc.binary_join_element_wise(*parts, "}", "")
    out = np.array(text.to_numpy(zero_copy_only=False), dtype=object)
    for row in np.flatnonzero(rare).tolist():
        out[row] = orjson.dumps(table.slice(row, 1).to_pylist()[0]).decode()
    return out
