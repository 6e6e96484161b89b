"""Track files → fixes: one entry point for uploads and ``gridpatrol ingest FILE --device ID``.

``parse_file`` picks the format (the caller's word, else the file extension, else the content),
then hands over to the format's parser: ``gpx`` (streaming expat), ``nmea`` (RMC + GGA),
``csv`` (pyarrow, vectorised) or ``geojson``. All return a ``ParseResult``: the fixes that parsed,
one ``FixError`` per unusable line/row/feature, and where a truncated or malformed file stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from api.protocols.csvfix import parse_csv
from api.protocols.geojsonfix import parse_geojson
from api.protocols.gpx import parse_gpx
from api.protocols.nmea import parse_nmea
from api.protocols.trackcommon import ParseResult, TrackFileError, check_tz, speed_factor

FORMATS = ("gpx", "nmea", "csv", "geojson")
EXTENSIONS = {
    ".gpx": "gpx",
    ".nmea": "nmea",
    ".nma": "nmea",
    ".csv": "csv",
    ".tsv": "csv",
    ".geojson": "geojson",
    ".json": "geojson",
}
_NMEA_LINE = re.compile(rb"^[^$\r\n]{0,40}\$[A-Z]{5},", re.MULTILINE)

__all__ = ["FORMATS", "ParseResult", "TrackFileError", "detect_format", "parse_file"]


def detect_format(head: bytes, name: str | None = None) -> str:
    """The format of a file from its name's extension, else from its first bytes.

    Parameters
    ----------
    head : bytes
        The start of the file (a few KiB suffice).
    name : str, optional
        The file name; a known extension decides.

    Raises
    ------
    TrackFileError
        Neither the name nor the content says, naming the supported formats.
    """
    if name is not None:
        ext = Path(name).suffix.lower()
        if ext in EXTENSIONS:
            return EXTENSIONS[ext]
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<") and b"<gpx" in text[:4096]:
        return "gpx"
    if text[:1] in (b"{", b"["):
        return "geojson"
    if _NMEA_LINE.search(text[:4096]):
        return "nmea"
    first = text.split(b"\n", 1)[0]
    if any(sep in first for sep in (b",", b";", b"\t")):
        return "csv"
    raise TrackFileError(f"cannot tell the track format; supported: {', '.join(FORMATS)}")


def parse_file(
    data: bytes | str | os.PathLike[str],
    *,
    format: str | None = None,
    device: str | None = None,
    tz: str = "UTC",
    speed_unit: str | None = None,
    date: dt.date | None = None,
) -> ParseResult:
    """Parse a track file of any supported format into fixes.

    Parameters
    ----------
    data : bytes or path
        The file's content, or its path (a ``str`` is a path). GPX paths are streamed.
    format : {"gpx", "nmea", "csv", "geojson"}, optional
        The format; default from the path's extension, else sniffed from the content.
    device : str, optional
        Device identifier; required when the file names none (GPX, NMEA, CSV without a device
        column), otherwise the fallback for rows/features without one.
    tz : str
        IANA zone of naive times (CSV, GeoJSON, GPX; NMEA is UTC by definition). Default UTC.
    speed_unit : str, optional
        Unit of CSV/GeoJSON speeds: m/s, km/h, knots or mph (default: a unit named in the CSV
        column, else m/s). GPX speeds are m/s and NMEA knots by definition.
    date : datetime.date, optional
        UTC date for NMEA GGA sentences when the log has no RMC.

    Returns
    -------
    ParseResult
        ``fixes``, ``errors`` (1-based line/row/feature numbers), ``stopped_at``, ``format``.

    Raises
    ------
    TrackFileError
        Unknown format (the message names the supported ones), no device where one is needed,
        a CSV without latitude/longitude/time columns, an unknown zone or speed unit.
    """
    check_tz(tz)
    source: bytes | Path = data if isinstance(data, bytes) else Path(data)
    if format is None:
        if isinstance(source, Path):
            with source.open("rb") as handle:
                format = detect_format(handle.read(8192), source.name)
        else:
            format = detect_format(source[:8192])
    format = format.lower()
    if format not in FORMATS:
        raise TrackFileError(f"unknown track format {format!r}; supported: {', '.join(FORMATS)}")
    if format in ("gpx", "nmea") and device is None:
        raise TrackFileError(f"{format} files name no device: pass device=")
    factor = speed_factor(speed_unit or "m/s")
    if format == "gpx" and device is not None:
        return parse_gpx(source, device=device, tz=tz)
    content = source.read_bytes() if isinstance(source, Path) else source
    if format == "nmea" and device is not None:
        return parse_nmea(content, device=device, date=date)
    if format == "csv":
        return parse_csv(content, device=device, tz=tz, speed_unit=speed_unit)
    return parse_geojson(content, device=device, tz=tz, speed_factor=factor)
