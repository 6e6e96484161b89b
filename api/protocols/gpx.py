"""GPX 1.0/1.1 tracks, routes and timed waypoints, read by a streaming expat parser.

Streaming: the document is fed to expat in 1 MiB chunks and only the current point is held, so a
100 MB file never becomes a tree. Namespaces are matched by local name (``gpxtpx:speed`` and
``speed`` alike), so any extension prefix works.

Safety: a document type declaration is refused outright (GPX needs none), which rules out
entity-expansion ("billion laughs") and external-entity attacks whatever the expat version;
expat ≥ 2.4 also caps amplification itself. ``defusedxml`` is not needed for this.

Truncated or malformed files keep every point completed before the fault; ``stopped_at`` gives the
line and column expat stopped at.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from xml.parsers import expat

import numpy as np
import orjson
import pandas as pd
from numpy.typing import NDArray

from api.ingest.fixes import FixBatch, FixError
from api.protocols.trackcommon import (
    ParseResult,
    TrackFileError,
    clean_optional,
    range_reasons,
    screen,
    times_to_us,
)

_POINTS = frozenset({"trkpt", "rtept", "wpt"})
_CHUNK = 1 << 20
# child elements with a column of their own (any namespace): local name → column
_COLUMNS = {"ele": "altitude", "time": "time", "speed": "speed", "course": "course"}
_SKIP = frozenset({"extensions", "TrackPointExtension", "link"})


class _Stop(Exception):
    """Raised inside a handler to end parsing with a message."""


class _Reader:
    """Expat handlers collecting one point at a time into column lists."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.depth = 0
        self.segments = 0
        self.point: dict[str, Any] | None = None
        self.text: list[str] = []
        self.cols: dict[str, list[Any]] = {
            k: []
            for k in (
                *("kind", "lat", "lon", "time", "speed", "course", "altitude"),
                *("extras", "row", "seg"),
            )
        }
        self.errors: list[FixError] = []

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = name.rpartition(":")[2]
        self.depth += 1
        if self.depth == 1 and local != "gpx":
            raise _Stop(f"root element is <{name}>, not <gpx>")
        if local in _POINTS:
            self.point = {
                "kind": local,
                "lat": attrs.get("lat"),
                "lon": attrs.get("lon"),
                "row": self.parser.CurrentLineNumber,
                "extras": {},
            }
        elif local == "trkseg":
            self.segments += 1
        self.text.clear()

    def chars(self, data: str) -> None:
        if self.point is not None:
            self.text.append(data)

    def end(self, name: str) -> None:
        self.depth -= 1
        point = self.point
        if point is None:
            return
        local = name.rpartition(":")[2]
        if local in _POINTS:
            self._finish(point)
            self.point = None
            return
        value = "".join(self.text).strip()
        self.text.clear()
        if not value or local in _SKIP:
            return
        column = _COLUMNS.get(local)
        if column is not None and column not in point:
            point[column] = value
        else:
            point["extras"][local] = _scalar(value)

    def _finish(self, point: dict[str, Any]) -> None:
        if "time" not in point:
            if point["kind"] == "trkpt":  # waypoints and route points without time are no fixes
                self.errors.append(FixError(point["row"], "missing", "time", _raw(point)))
            return
        cols = self.cols
        cols["kind"].append(point["kind"])
        cols["lat"].append(point["lat"])
        cols["lon"].append(point["lon"])
        cols["time"].append(point["time"])
        for name in ("speed", "course", "altitude"):
            cols[name].append(_float(point.get(name)))
        extras = point["extras"]
        if point["kind"] != "trkpt":
            extras["kind"] = point["kind"]
        cols["extras"].append(extras)
        cols["row"].append(point["row"])
        cols["seg"].append(self.segments - 1 if point["kind"] == "trkpt" else None)


def _float(text: str | None) -> float:
    if text is None:
        return np.nan
    try:
        return float(text)
    except ValueError:
        return np.nan


def _scalar(text: str) -> Any:
    digits = text.lstrip("+-")
    if digits.isascii() and digits.isdigit() and (digits == "0" or digits[0] != "0"):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if np.isfinite(number) else text


def _raw(point: dict[str, Any]) -> str:
    return f'<{point["kind"]} lat="{point["lat"]}" lon="{point["lon"]}">'


def _refuse_dtd(*_: Any) -> None:
    raise _Stop("document type declarations are refused (entity expansion protection)")


def _chunks(source: bytes | Path | IO[bytes]) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        stream: IO[bytes] = io.BytesIO(source)
    elif isinstance(source, Path):
        with source.open("rb") as handle:
            yield from iter(lambda: handle.read(_CHUNK), b"")
        return
    else:
        stream = source
    yield from iter(lambda: stream.read(_CHUNK), b"")


def parse_gpx(source: bytes | Path | IO[bytes], *, device: str, tz: str = "UTC") -> ParseResult:
    """Parse a GPX document into fixes.

    Parameters
    ----------
    source : bytes, Path or binary file
        The document; paths and files are read in 1 MiB chunks.
    device : str
        The device identifier for every fix (GPX names none).
    tz : str
        IANA zone for times without an offset (GPX prescribes UTC; default UTC).

    Returns
    -------
    ParseResult
        Track points, route points and waypoints that carry a time; speed (m/s, GPX 1.0
        ``speed`` or an extension's), course (degrees) and ``ele`` as altitude; ``hdop``, ``sat``,
        other leaf elements and the 0-based ``segment`` of track points (when the file has
        several) in ``extras``; ``row`` is the
        line of the point's start tag. Track points without a time are errors.
    """
    parser = expat.ParserCreate()
    reader = _Reader(parser)
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.chars
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.buffer_text = True
    stopped_at = None
    try:
        for chunk in _chunks(source):
            parser.Parse(chunk, False)  # noqa: FBT003 (expat's API)
        parser.Parse(b"", True)  # noqa: FBT003
    except expat.ExpatError as exc:
        stopped_at = f"line {exc.lineno}, column {exc.offset + 1}: {expat.ErrorString(exc.code)}"
    except (ValueError, LookupError) as exc:  # an encoding expat cannot read (GBK, unknown)
        if "encoding" not in str(exc):
            raise
        raise TrackFileError(f"cannot read the GPX file's encoding ({exc}); save as UTF-8") from exc
    except _Stop as exc:
        stopped_at = (
            f"line {parser.CurrentLineNumber}, column {parser.CurrentColumnNumber + 1}: {exc}"
        )
    batch, errors = _assemble(reader, device, tz)
    errors = sorted([*reader.errors, *errors], key=lambda e: e.row)
    return ParseResult(fixes=batch, errors=errors, stopped_at=stopped_at, format="gpx")


def _assemble(reader: _Reader, device: str, tz: str) -> tuple[FixBatch, list[FixError]]:
    cols = reader.cols
    n = len(cols["row"])
    if n == 0:
        return FixBatch.empty(), []
    time_us, time_reasons = times_to_us(cols["time"], tz)
    several = reader.segments > 1
    extras: list[str | None] = []
    for seg, extra in zip(cols["seg"], cols["extras"], strict=True):
        if several and seg is not None:
            extra["segment"] = seg
        extras.append(orjson.dumps(extra).decode() if extra else None)
    lat = _floats(cols["lat"])
    lon = _floats(cols["lon"])
    batch = FixBatch.from_columns(
        device=np.full(n, device, dtype=object),
        time_us=time_us,
        lat=lat,
        lon=lon,
        speed=clean_optional(np.asarray(cols["speed"], dtype=np.float64), 0, np.inf),
        course=clean_optional(np.asarray(cols["course"], dtype=np.float64), 0, 360),
        altitude=np.asarray(cols["altitude"], dtype=np.float64),
        extras=extras,
        row=cols["row"],
    )
    problems = [
        ("lat", range_reasons(lat, _present(cols["lat"]), -90, 90)),
        ("lon", range_reasons(lon, _present(cols["lon"]), -180, 180)),
        ("time", time_reasons),
    ]

    def raw(i: int) -> str:
        kind, time = cols["kind"][i], cols["time"][i]
        return f'<{kind} lat="{cols["lat"][i]}" lon="{cols["lon"][i]}"><time>{time}</time>'

    return screen(batch, problems, raw=raw)


def _present(texts: list[str | None]) -> NDArray[np.bool_]:
    return np.fromiter((t is not None for t in texts), dtype=bool, count=len(texts))


def _floats(texts: list[str | None]) -> NDArray[np.float64]:
    series = pd.Series(texts, dtype=object)
    return pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
