"""Malformed track files — GPX, NMEA, CSV and GeoJSON that are truncated, wrongly encoded, full
of NaN/inf or huge numbers, missing columns, BOM-prefixed, declaring another CRS, nested a
hundred thousand deep, XML bombs — through the parsers and through the upload route.

Each file ends one of two ways: refused as a whole with a clear error naming the problem
(``TrackFileError`` from the parser, 4xx from the route), or parsed with every unusable row
quarantined with its reason. Never another exception, never a 500, and never half-written: a
refused upload stores nothing, an accepted one stores exactly what its report says.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.protocols.trackfiles import TrackFileError, parse_file
from tests.conftest import auth

LAT, LON = 43.93, 116.08  # 锡林浩特, inside the service area
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def _t(i: int) -> str:
    return (NOW + timedelta(seconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _gpx(points: str, head: str = '<?xml version="1.0" encoding="UTF-8"?>') -> bytes:
    return (
        f'{head}\n<gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><name>巡逻</name><trkseg>{points}</trkseg></trk></gpx>"
    ).encode()


def _pt(lat: Any = LAT, lon: Any = LON, i: int = 0) -> str:
    return f'<trkpt lat="{lat}" lon="{lon}"><time>{_t(i)}</time></trkpt>'


GOOD_GPX = _gpx(_pt(i=0) + _pt(LAT + 0.001, LON + 0.001, 1))
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + k)} "{("&" + chr(97 + k) + ";") * 10}">' for k in range(9))
    + ']><gpx version="1.1"><trk><name>&j;</name><trkseg>'
    + _pt()
    + "</trkseg></trk></gpx>"
).encode()
XXE = (
    '<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<gpx version="1.1"><trk><name>&x;</name><trkseg>' + _pt() + "</trkseg></trk></gpx>"
).encode()


def _nmea(body: str) -> bytes:
    def line(sentence: str) -> str:
        check = 0
        for ch in sentence.encode():
            check ^= ch
        return f"${sentence}*{check:02X}\r\n"

    hhmmss, ddmmyy = NOW.strftime("%H%M%S"), NOW.strftime("%d%m%y")
    good = line(f"GPRMC,{hhmmss}.00,A,4355.800,N,11604.800,E,10.0,90.0,{ddmmyy},,,A")
    return (good + body.format(hhmmss=hhmmss, ddmmyy=ddmmyy, line=line)).encode("latin-1")


def _csv(text: str, encoding: str = "utf-8") -> bytes:
    return text.format(t0=_t(0), t1=_t(1), lat=LAT, lon=LON).encode(encoding)


def _fc(features: list[Any], **extra: Any) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features, **extra}).encode()


def _feature(lon: Any = LON, lat: Any = LAT, i: int = 0) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"time": _t(i)},
    }


CORPORA: dict[str, tuple[str, bytes]] = {
    # ---- GPX
    "gpx truncated mid-point": ("gpx", GOOD_GPX[: len(GOOD_GPX) // 2 + 20]),
    "gpx truncated in the prolog": ("gpx", b'<?xml version="1.0"'),
    "gpx not xml": ("gpx", b"this is not a gpx file\x00\xff"),
    "gpx empty": ("gpx", b""),
    "gpx latin-1 bytes declared utf-8": ("gpx", _gpx(_pt()).replace("巡逻".encode(), b"\xe9\xe8")),
    "gpx declared GBK": ("gpx", _gpx(_pt(), '<?xml version="1.0" encoding="GBK"?>')),
    "gpx declared unknown encoding": ("gpx", _gpx(_pt(), '<?xml version="1.0" encoding="X-9"?>')),
    "gpx utf-16": ("gpx", _gpx(_pt()).decode().replace("UTF-8", "UTF-16").encode("utf-16")),
    "gpx BOM": ("gpx", b"\xef\xbb\xbf" + GOOD_GPX),
    "gpx NaN and inf": ("gpx", _gpx(_pt("NaN", "inf") + _pt("-inf", "nan", 1) + _pt(i=2))),
    "gpx huge numbers": ("gpx", _gpx(_pt("1e308", "1e309") + _pt("9" * 400, LON, 1))),
    "gpx text coordinates": ("gpx", _gpx(_pt("north", "east") + _pt("", "", 1))),
    "gpx bad times": ("gpx", GOOD_GPX.replace(_t(0).encode(), b"2024-13-45T99:99:99Z")),
    "gpx entity bomb": ("gpx", BOMB),
    "gpx external entity": ("gpx", XXE),
    # ---- NMEA
    "nmea bad checksums": (
        "nmea",
        _nmea("$GPRMC,{hhmmss},A,4355.8,N,11604.8,E,1,1,{ddmmyy},,*00\n"),
    ),
    "nmea truncated sentence": ("nmea", _nmea("$GPRMC,{hhmmss}.00,A,4355.8")),
    "nmea NaN and inf": (
        "nmea",
        _nmea("") + b"$GPRMC,120000.00,A,nan,N,inf,E,nan,inf,010124,,,A*00\r\n",
    ),
    "nmea huge numbers": (
        "nmea",
        _nmea("$GPGGA,{hhmmss},9" + "9" * 300 + ",N,1e999,E,1,99,1,1e308,M,,M,,*00\n"),
    ),
    "nmea binary garbage": ("nmea", b"\x00\xff\xfe$GP\x7e\x7d" * 50),
    "nmea non-ascii": (
        "nmea",
        _nmea("$GPRMC,时间,A,纬度,N,经度,E,,,,,,A*00\n".encode().decode("latin-1")),
    ),
    "nmea empty": ("nmea", b""),
    # ---- CSV
    "csv missing lat column": ("csv", _csv("device,time,lon\nd1,{t0},{lon}\n")),
    "csv header only": ("csv", _csv("device,time,lat,lon\n")),
    "csv empty": ("csv", b""),
    "csv BOM semicolons": ("csv", b"\xef\xbb\xbf" + _csv("time;lat;lon\n{t0};{lat};{lon}\n")),
    "csv NaN inf": ("csv", _csv("time,lat,lon\n{t0},NaN,inf\n{t1},-inf,nan\n")),
    "csv huge numbers": ("csv", _csv("time,lat,lon\n{t0},1e400,1e308\n{t1}," + "9" * 400 + ",1\n")),
    "csv GBK header": ("csv", _csv("时间,纬度,经度\n{t0},{lat},{lon}\n", "gbk")),
    "csv utf-16": ("csv", _csv("time,lat,lon\n{t0},{lat},{lon}\n", "utf-16")),
    "csv ragged rows": ("csv", _csv("time,lat,lon\n{t0},{lat}\n{t1},{lat},{lon},7,8\n")),
    "csv unterminated quote": ("csv", _csv('time,lat,lon\n"{t0},{lat},{lon}\n')),
    "csv NUL bytes": ("csv", _csv("time,lat,lon\n{t0},{lat},{lon}\n") + b"\x00\x00,\x00\n"),
    "csv bad times": (
        "csv",
        _csv("time,lat,lon\nyesterday,{lat},{lon}\n99999999999999,{lat},{lon}\n"),
    ),
    "csv injection-looking values": (
        "csv",
        _csv("time,lat,lon\n{t0},{lat},{lon}\n'; DROP TABLE grid; --,1 OR 1=1,0\n"),
    ),
    # ---- GeoJSON
    "geojson truncated": ("geojson", _fc([_feature()])[:-7]),
    "geojson not json": ("geojson", b"{not json"),
    "geojson empty": ("geojson", b""),
    "geojson NaN literal": ("geojson", _fc([_feature()]).replace(str(LON).encode(), b"NaN")),
    "geojson Infinity literal": (
        "geojson",
        _fc([_feature()]).replace(str(LAT).encode(), b"-Infinity"),
    ),
    "geojson huge numbers": ("geojson", _fc([_feature()]).replace(str(LAT).encode(), b"1e400")),
    "geojson BOM": ("geojson", b"\xef\xbb\xbf" + _fc([_feature()])),
    "geojson utf-16": ("geojson", _fc([_feature()]).decode().encode("utf-16")),
    "geojson declares EPSG:3857": (
        "geojson",
        _fc(
            [_feature(12_921_000.0, 5_453_000.0)],
            crs={"type": "name", "properties": {"name": "EPSG:3857"}},
        ),
    ),
    "geojson mixed crs per feature": (
        "geojson",
        _fc(
            [
                _feature(),
                {
                    **_feature(12_921_000.0, 5_453_000.0, 1),
                    "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
                },
            ]
        ),
    ),
    "geojson wrong geometries": (
        "geojson",
        _fc(
            [
                {"type": "Feature", "geometry": None, "properties": {"time": _t(0)}},
                {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": []}},
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": ["a", "b"]}},
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1]}},
                {"type": "Feature"},
                "not a feature",
            ]
        ),
    ),
    "geojson not a collection": ("geojson", b'{"type": "Topology", "objects": {}}'),
    "geojson array of numbers": ("geojson", b"[1, 2, 3]"),
    "geojson deeply nested": ("geojson", b"[" * 100_000 + b"]" * 100_000),
    "geojson deeply nested object": (
        "geojson",
        b'{"type": "FeatureCollection", "features": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ),
}
IDS = sorted(CORPORA)


@pytest.mark.parametrize("name", IDS)
def test_the_parser_refuses_clearly_or_quarantines_with_reasons(name: str) -> None:
    fmt, data = CORPORA[name]
    try:
        result = parse_file(data, format=fmt, device="dev-corpus")
    except TrackFileError as exc:
        refusal = str(exc)
        assert refusal.strip(), "a refusal must say what is wrong"
        return
    for error in result.errors:
        assert error.reason, f"{name}: row {error.row} quarantined without a reason"
    assert "root:" not in json.dumps([e.raw for e in result.errors], default=str)


def _count(db: psycopg.Connection[Any], device: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT (SELECT count(*) FROM position p JOIN device d ON d.id = p.device_id "
        "        WHERE d.identifier = %(d)s),"
        "       (SELECT count(*) FROM position_rejected WHERE identifier = %(d)s)",
        {"d": device},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.mark.usefixtures("demo")
@pytest.mark.parametrize("name", IDS)
def test_the_upload_route_answers_4xx_or_a_report_never_500(
    name: str, client: TestClient, make_device: Any, db: psycopg.Connection[Any]
) -> None:
    fmt, data = CORPORA[name]
    identifier, token = make_device("152502100200")
    before = _count(db, identifier)
    response = client.post(
        "/api/v1/positions/files",
        params={"format": fmt},
        content=data,
        headers={**auth(token), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code < 500, response.text
    stored, _ = _count(db, identifier)
    body = response.json()
    if response.status_code >= 400:
        assert body["detail"], "a refusal must name the problem"
        assert stored == before[0], "a refused upload must store nothing"
        return
    assert response.status_code == 200
    assert stored - before[0] == body["stored"]
    rejected = sum(body["rejected"].values())
    assert body["received"] == body["stored"] + body["duplicate"] + rejected
    for error in body["errors"]:
        assert error["reason"]
    assert "root:" not in response.text
