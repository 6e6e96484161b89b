"""CSV track files: header aliases, delimiters, units, zones, bad rows by line; CapMetro."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from api.ingest.fixes import to_time_us
from api.protocols.trackfiles import ParseResult, TrackFileError, parse_file
from tests.api.protocols.support import (
    CAPMETRO,
    DATA,
    KNOT,
    SECOND,
    T0,
    errors_by_row,
    extras,
)


class TestCsv:
    def test_bom_semicolons_decimal_commas_local_times(self) -> None:
        result = parse_file(DATA / "bom_semicolon.csv", tz="Asia/Shanghai")
        fixes = result.fixes
        assert result.format == "csv"
        assert result.stopped_at is None
        assert list(fixes.row) == [2, 3, 4, 8, 11]
        assert list(fixes.device) == ["蒙H·0001"] * 3 + ["蒙H·0002"] * 2
        assert list(fixes.time_us[:3]) == [T0, T0 + 10 * SECOND, T0 + 20 * SECOND]
        assert fixes.time_us[4] == T0 + 25 * SECOND  # an explicit offset wins over tz
        assert fixes.lat[0] == 43.9333
        assert fixes.altitude[0] == 1003.4
        assert fixes.speed[0] == pytest.approx(10.0)  # "Speed (km/h)" names its unit
        assert math.isnan(fixes.speed[4])
        assert math.isnan(fixes.course[4])
        assert fixes.battery[0] == 88
        assert fixes.course[0] == 62
        assert extras(fixes, 0) == {"Driver": "Bao; Wei"}

    def test_bad_rows_are_reported_with_line_numbers(self) -> None:
        result = parse_file(DATA / "bom_semicolon.csv", tz="Asia/Shanghai")
        assert errors_by_row(result) == {
            6: ("lat", "not a number"),
            7: (None, "6 fields where the header has 9"),
            9: ("device", "missing"),
            10: ("time", "not an ISO 8601 time or unix seconds/milliseconds"),
        }
        assert result.errors[0].raw == "蒙H·0002;2026-11-24 16:00:00;abc;116,10000;0;0;1010;95;Sun"

    def test_quoted_newlines_keep_line_numbers_right(self) -> None:
        data = (
            b'id,time,lat,lon,note\n1,1795507200,43.9,116.1,"multi\nline"\n'
            b'1,1795507201000,43.9,116.1,x\n1,1795507202,95,116.1,"a ""b"" c"\n'
            b'1,1795507203,43.9\n\n1,1795507204,43.9,116.1,"again\nand\nagain"\n'
            b"1,soon,43.9,116.1,z\n"
        )
        result = parse_file(data, format="csv")
        assert list(result.fixes.row) == [2, 4, 8]
        assert list(result.fixes.time_us) == [T0, T0 + SECOND, T0 + 4 * SECOND]
        assert extras(result.fixes, 2) == {"note": "again\nand\nagain"}
        assert sorted(errors_by_row(result)) == [5, 6, 11]

    def test_tabs_unix_seconds_and_device_fallback(self) -> None:
        data = b"lat\tlon\ttimestamp\tspeed_kmh\n43.9\t116.1\t1795507200\t36\n"
        with pytest.raises(TrackFileError, match="no device column"):
            parse_file(data, format="csv")
        fixes = parse_file(data, format="csv", device="cli").fixes
        assert list(fixes.device) == ["cli"]
        assert fixes.speed[0] == pytest.approx(10.0)

    def test_device_fallback_fills_blank_device_cells(self) -> None:
        data = b"device,time,lat,lon\na,2026-11-24T08:00:00Z,1,2\n,2026-11-24T08:00:00Z,1,2\n"
        assert list(parse_file(data, format="csv", device="cli").fixes.device) == ["a", "cli"]

    @pytest.mark.parametrize(
        ("unit", "expected"),
        [("m/s", 10.0), ("km/h", 10 / 3.6), ("knots", 10 * KNOT), ("mph", 4.4704)],
    )
    def test_speed_unit(self, unit: str, expected: float) -> None:
        data = b"vehicle_id,fix_time,latitude,lng,speed\nv,2026-11-24T08:00:00Z,1,2,10\n"
        fixes = parse_file(data, format="csv", speed_unit=unit).fixes
        assert fixes.speed[0] == pytest.approx(expected)

    def test_separate_date_and_time_columns(self) -> None:
        data = b"id,date,time,lat,lon\na,2026-11-24,08:00:00,1,2\n"
        fixes = parse_file(data, format="csv").fixes
        assert list(fixes.time_us) == [T0]
        assert fixes.extras[0] is None

    def test_dst_ambiguous_local_time_is_a_bad_row(self) -> None:
        data = (
            b"id,time,lat,lon\n"
            b"a,2015-11-01 01:30:00,30.2,-97.7\n"  # happens twice in Chicago
            b"a,2015-03-08 02:30:00,30.2,-97.7\n"  # never happens in Chicago
            b"a,2015-03-08 03:30:00,30.2,-97.7\n"
        )
        result = parse_file(data, format="csv", tz="America/Chicago")
        assert sorted(errors_by_row(result)) == [2, 3]
        assert "DST" in result.errors[0].reason
        expected = to_time_us(dt.datetime(2015, 3, 8, 8, 30, tzinfo=dt.UTC))
        assert list(result.fixes.time_us) == [expected]

    def test_unmapped_columns_become_json_extras(self) -> None:
        data = (
            b"id,time,lat,lon,note,code\n"
            b'a,2026-11-24T08:00:00Z,1,2,"say ""hi"" \\ back\ttab",\n'
            b'a,2026-11-24T08:00:01Z,1,2,"bell\x07",007\n'
        )
        fixes = parse_file(data, format="csv").fixes
        assert extras(fixes, 0) == {"note": 'say "hi" \\ back\ttab', "code": None}
        assert extras(fixes, 1) == {"note": "bell\x07", "code": "007"}  # texts stay texts

    def test_missing_columns_name_the_aliases(self) -> None:
        with pytest.raises(TrackFileError, match=r"lacks columns for \['time'\]"):
            parse_file(b"id,lat,lon\na,1,2\n", format="csv")

    def test_unknown_zone_and_unit(self) -> None:
        with pytest.raises(TrackFileError, match="unknown time zone"):
            parse_file(b"id,time,lat,lon\n", format="csv", tz="Mars/Olympus")
        with pytest.raises(TrackFileError, match="unknown speed unit"):
            parse_file(b"id,time,lat,lon\n", format="csv", speed_unit="furlongs")


def test_a_large_csv_keeps_every_row_and_its_line_number() -> None:
    header, body = CAPMETRO.read_bytes().split(b"\n", 1)
    data = header + b"\n" + body * 9  # 111,186 rows, four unmapped columns
    result = parse_file(data, format="csv", speed_unit="mph")
    assert len(result.fixes) == 111_186
    assert result.fixes.row[-1] == 111_187
    assert result.errors == []


@pytest.fixture(scope="module")
def capmetro() -> ParseResult:
    return parse_file(CAPMETRO, speed_unit="mph")


class TestCapMetro:
    """The real multi-vehicle trace in data/tracks (CapMetrics, MIT; see SOURCES.md)."""

    def test_all_rows_parse(self, capmetro: ParseResult) -> None:
        result = capmetro
        assert result.format == "csv"
        assert result.errors == []
        assert result.stopped_at is None
        assert len(result.fixes) == 12_354  # the 6 exact duplicates included: dedup is ingest's
        assert len(set(result.fixes.device)) == 140
        assert list(result.fixes.row[:2]) == [2, 3]
        assert extras(result.fixes, 0)["timestamp_local"] == "2015-03-08T01:40:54-06:00"

    def test_times_are_utc_across_the_dst_change(self, capmetro: ParseResult) -> None:
        fixes = capmetro.fixes
        assert fixes.time_us[0] == to_time_us(dt.datetime(2015, 3, 8, 7, 40, 54, tzinfo=dt.UTC))
        # the local column (-06:00, then -05:00 after 02:00 CST) yields the same instants
        text = CAPMETRO.read_bytes().replace(b"timestamp_utc", b"utc_column", 1)
        local = parse_file(text.replace(b"timestamp_local", b"time", 1), format="csv")
        assert np.array_equal(local.fixes.time_us, fixes.time_us)

    def test_speeds_come_out_in_metres_per_second(self, capmetro: ParseResult) -> None:
        b = capmetro.fixes
        order = np.lexsort((b.time_us, b.device))
        device, t = b.device[order], b.time_us[order] / 1e6
        lat, lon, speed = np.radians(b.lat[order]), np.radians(b.lon[order]), b.speed[order]
        a = (
            np.sin(np.diff(lat) / 2) ** 2
            + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(np.diff(lon) / 2) ** 2
        )
        metres = 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))
        seconds = np.diff(t)
        ok = (device[1:] == device[:-1]) & (seconds > 0) & (seconds <= 180)
        implied = metres[ok] / seconds[ok]
        moving = (implied > 2) & (speed[1:][ok] > 2)
        ratio = float(np.median(speed[1:][ok][moving] / implied[moving]))
        assert moving.sum() > 5_000
        assert ratio == pytest.approx(1.0, abs=0.1)
