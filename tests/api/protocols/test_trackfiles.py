"""Track files: GPX, NMEA, GeoJSON and format detection — what parses, what is reported, where
parsing stopped. CSV lives in test_csvfix.py."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from api.ingest.fixes import to_time_us
from api.protocols.trackfiles import TrackFileError, detect_format, parse_file
from tests.api.protocols.support import DATA, KNOT, SECOND, T0, errors_by_row, extras


class TestGpx:
    def test_two_segments_with_extensions_and_a_waypoint(self) -> None:
        result = parse_file(DATA / "two_segments.gpx", device="蒙H·0001")
        assert result.format == "gpx"
        assert result.stopped_at is None
        fixes = result.fixes
        assert list(fixes.row) == [11, 23, 35, 51, 58]  # line of each point's start tag
        assert set(fixes.device) == {"蒙H·0001"}
        assert list(fixes.time_us) == [
            T0 - 120 * SECOND,  # the timed waypoint
            T0,
            T0 + 1_500_000,
            T0 + 1200 * SECOND,  # 16:20+08:00
            T0 + 1210 * SECOND,
        ]
        assert fixes.speed[1] == 10.96
        assert fixes.course[2] == 63.5
        assert fixes.altitude[1] == 1003.4
        assert math.isnan(fixes.altitude[4])
        assert extras(fixes, 0) == {"name": "Alarm phone 152502100201-03", "sym": "Flag, Blue"} | {
            "kind": "wpt"
        }
        assert extras(fixes, 1) == {"hdop": 0.9, "sat": 9, "segment": 0}
        assert extras(fixes, 2) == {"atemp": -12.5, "segment": 0}
        assert extras(fixes, 3) == {"segment": 1}

    def test_bad_points_are_reported_with_their_line(self) -> None:
        result = parse_file(DATA / "two_segments.gpx", device="d")
        assert errors_by_row(result) == {
            46: ("time", "missing"),  # a trkpt without time; untimed wpt/rtept are no fixes
            55: ("lat", "out of range -90..90"),
        }
        assert result.errors[1].raw is not None
        assert 'lat="95.0"' in result.errors[1].raw

    def test_gpx_1_0_speed_and_course_elements(self) -> None:
        fixes = parse_file((DATA / "gpx10_speed.gpx").read_bytes(), device="d").fixes
        assert list(fixes.speed[:2]) == [12.5, 12.8]  # m/s, as GPX defines
        assert list(fixes.course[:2]) == [90.0, 91.5]
        assert math.isnan(fixes.speed[2])
        assert math.isnan(fixes.course[2])
        assert extras(fixes, 0) == {"hdop": 1.1, "sat": 8, "fix": "3d"}

    def test_truncated_file_keeps_what_parsed(self) -> None:
        text = (DATA / "two_segments.gpx").read_bytes()
        cut = text[: text.index(b'<trkpt lat="43.941100"') + 30]
        result = parse_file(cut, format="gpx", device="d")
        assert len(result.fixes) == 4
        assert result.stopped_at == "line 58, column 7: unclosed token"  # the cut <trkpt

    def test_malformed_file_says_where(self) -> None:
        text = (DATA / "gpx10_speed.gpx").read_text().replace("</ele><time>", "</elevation><time>")
        result = parse_file(text.encode(), format="gpx", device="d")
        assert len(result.fixes) == 0
        assert result.stopped_at == "line 5, column 48: mismatched tag"

    def test_entity_expansion_is_refused(self) -> None:
        bomb = b"""<?xml version="1.0"?>
<!DOCTYPE gpx [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<gpx><trk><trkseg><trkpt lat="1" lon="2"><time>&b;</time></trkpt></trkseg></trk></gpx>"""
        result = parse_file(bomb, format="gpx", device="d")
        assert len(result.fixes) == 0
        assert result.stopped_at is not None
        assert "document type declarations are refused" in (result.stopped_at)

    def test_other_xml_is_not_gpx(self) -> None:
        result = parse_file(b"<kml><Placemark/></kml>", format="gpx", device="d")
        assert result.stopped_at is not None
        assert "not <gpx>" in result.stopped_at

    def test_namespace_prefixes_do_not_matter(self) -> None:
        doc = b"""<g:gpx xmlns:g="http://www.topografix.com/GPX/1/1"><g:trk><g:trkseg>
<g:trkpt lat="1" lon="2"><g:time>2026-11-24T08:00:00Z</g:time><g:ele>5</g:ele></g:trkpt>
</g:trkseg></g:trk></g:gpx>"""
        fixes = parse_file(doc, format="gpx", device="d").fixes
        assert list(fixes.time_us) == [T0]
        assert fixes.altitude[0] == 5


class TestNmea:
    def test_gga_and_rmc_merge_per_epoch(self) -> None:
        result = parse_file(DATA / "drive_truncated.nmea", device="d")
        fixes = result.fixes
        assert result.format == "nmea"
        assert len(fixes) == 9
        assert list(fixes.time_us) == [T0 + k * SECOND for k in range(9)]
        assert list(fixes.row) == [3, 6, 10, 13, 16, 19, 22, 26, 29]  # first sentence of epoch
        assert fixes.lat[0] == pytest.approx(43.9333)
        assert fixes.lon[0] == pytest.approx(116.0754)
        assert fixes.speed[0] == pytest.approx(21.3 * KNOT)  # knots → m/s
        assert fixes.course[0] == 62.5
        assert fixes.altitude[0] == 1003.4  # from GGA
        assert extras(fixes, 0) == {"quality": 1, "satellites": 9, "hdop": 0.9, "mode": "A"}
        assert fixes.raw[0].count("$") == 2
        assert "GNGSA" not in fixes.raw[0]

    def test_bad_checksum_costs_one_line(self) -> None:
        result = parse_file(DATA / "drive_truncated.nmea", device="d")
        field, reason = errors_by_row(result)[15]
        assert field == "checksum"
        assert reason == "bad checksum *00 (computed *49)"
        fixes = result.fixes  # epoch 08:00:03 still stands on its GGA, dated by earlier RMCs
        assert fixes.time_us[3] == T0 + 3 * SECOND
        assert math.isnan(fixes.speed[3])

    def test_status_v_with_position_is_kept_and_flagged(self) -> None:
        fixes = parse_file(DATA / "drive_truncated.nmea", device="d").fixes
        assert extras(fixes, 5)["valid"] is False
        assert all("valid" not in extras(fixes, i) for i in range(9) if i != 5)

    def test_no_fix_epoch_and_truncated_last_line(self) -> None:
        result = parse_file(DATA / "drive_truncated.nmea", device="d")
        rows = errors_by_row(result)
        assert rows[1] == ("lat", "no position (receiver had no fix)")
        assert rows[31] == ("checksum", "truncated sentence")
        assert sorted(rows) == [1, 15, 31]
        assert result.stopped_at == "line 31: truncated sentence"

    def test_gga_only_log_takes_the_given_date_and_wraps_midnight(self) -> None:
        log = _sentences(
            "GPGGA,235959.00,4355.9980,N,11604.5240,E,1,08,1.0,1003.0,M,,M,,",
            "GPGGA,000000.00,4355.9990,N,11604.5250,E,1,08,1.0,1003.0,M,,M,,",
        )
        with pytest.raises(TrackFileError, match="pass device="):
            parse_file(log, format="nmea")
        undated = parse_file(log, format="nmea", device="d")
        assert len(undated.fixes) == 0
        assert undated.errors[0].field == "date"
        fixes = parse_file(log, format="nmea", device="d", date=dt.date(2026, 11, 23)).fixes
        assert list(fixes.time_us) == [T0 - 8 * 3600 * SECOND - SECOND, T0 - 8 * 3600 * SECOND]

    def test_gga_before_the_first_rmc_takes_its_date_across_midnight(self) -> None:
        log = _sentences(
            "GPGGA,235959.00,4355.9980,N,11604.5240,E,1,08,1.0,1003.0,M,,M,,",
            "GPRMC,000000.00,A,4355.9990,N,11604.5250,E,0.0,,241126,,,A",
            "GPGGA,000001.00,4355.9990,N,11604.5250,E,1,08,1.0,1003.0,M,,M,,",
        )
        fixes = parse_file(log, format="nmea", device="d").fixes
        midnight = T0 - 8 * 3600 * SECOND
        assert list(fixes.time_us) == [midnight - SECOND, midnight, midnight + SECOND]

    def test_southern_western_hemispheres_and_other_talkers(self) -> None:
        log = _sentences("GLRMC,120000,A,3352.1234,S,15112.5678,W,0.0,,010125,,,A")
        fixes = parse_file(log, format="nmea", device="d").fixes
        assert fixes.lat[0] == pytest.approx(-(33 + 52.1234 / 60))
        assert fixes.lon[0] == pytest.approx(-(151 + 12.5678 / 60))
        assert fixes.time_us[0] == to_time_us(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))

    def test_garbage_and_bad_fields_are_line_errors(self) -> None:
        log = (
            _sentences(
                "GPRMC,120000,A,4399.0000,N,11604.5240,E,0.0,,241126,,,A",
                "GPRMC,1200,A,4355.0000,N,11604.5240,E,0.0,,241126,,,A",
            )
            + b"hello\n$GPRMC,120001,A,4355.0,N,11604.5,E,0.0,,241126,,,A\n"
        )
        rows = errors_by_row(parse_file(log, format="nmea", device="d"))
        assert rows[1][0] == "lat"
        assert rows[1][1].startswith("not ddmm.mmmm")
        assert rows[2][0] == "time"
        assert rows[3] == (None, "not an NMEA sentence")
        assert rows[4] == ("checksum", "missing checksum")


def _sentences(*bodies: str) -> bytes:
    lines = []
    for body in bodies:
        checksum = 0
        for byte in body.encode():
            checksum ^= byte
        lines.append(f"${body}*{checksum:02X}\r\n")
    return "".join(lines).encode()


class TestGeoJson:
    def test_point_features(self) -> None:
        result = parse_file(DATA / "points.geojson", device="fallback")
        fixes = result.fixes
        assert result.format == "geojson"
        assert result.stopped_at is None
        assert list(fixes.device) == ["蒙H·0001", "蒙H·0001", "蒙H·0002"]
        assert list(fixes.time_us) == [T0, T0 + SECOND, T0]  # ISO Z, unix s, ISO +08:00
        assert list(fixes.row) == [1, 2, 3]
        assert list(fixes.altitude[:2]) == [1003.4, 1003.6]  # third coordinate or property
        assert (fixes.speed[0], fixes.course[0], fixes.accuracy[0], fixes.battery[0]) == (
            10.9,
            62.5,
            4.0,
            88,
        )
        assert extras(fixes, 0) == {"route": "east loop"}

    def test_bad_features_are_reported(self) -> None:
        rows = errors_by_row(parse_file(DATA / "points.geojson"))
        assert rows[4] == ("time", "missing")
        assert rows[5][0] == "geometry"
        assert rows[5][1].startswith("Polygon geometry")
        assert rows[6] == ("lon", "out of range -180..180")

    def test_lines_with_coord_times(self) -> None:
        result = parse_file(DATA / "line_coordtimes.geojson", device="fallback")
        fixes = result.fixes
        assert list(fixes.device) == ["蒙H·0003"] * 3 + ["fallback"] * 4
        assert list(fixes.row) == [1, 1, 1, 2, 2, 2, 2]
        assert list(fixes.time_us[:3]) == [T0, T0 + 10 * SECOND, T0 + 20 * SECOND]
        assert fixes.time_us[5] == T0 + 5400 * SECOND  # second part of the MultiLineString
        assert fixes.altitude[2] == 1004.2
        assert errors_by_row(result) == {3: ("geometry", "1 times for 2 coordinates")}

    def test_device_is_required_somewhere(self) -> None:
        result = parse_file(DATA / "line_coordtimes.geojson")
        assert len(result.fixes) == 3
        assert {e.field for e in result.errors} == {"device", "geometry"}

    def test_truncated_collection_keeps_the_complete_features(self) -> None:
        text = (DATA / "points.geojson").read_bytes()
        cut = text[: text.index(b'"datetime"')]
        result = parse_file(cut, format="geojson")
        assert len(result.fixes) == 2
        assert result.stopped_at is not None
        assert result.stopped_at.startswith("line 10,")

    def test_not_features(self) -> None:
        with pytest.raises(TrackFileError, match="not a GeoJSON"):
            parse_file(b'{"type": "Point", "coordinates": [1, 2]}', format="geojson")


class TestDetection:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("two_segments.gpx", "gpx"),
            ("drive_truncated.nmea", "nmea"),
            ("bom_semicolon.csv", "csv"),
            ("points.geojson", "geojson"),
        ],
    )
    def test_by_content_when_the_name_says_nothing(self, name: str, expected: str) -> None:
        assert detect_format((DATA / name).read_bytes()[:4096]) == expected
        assert detect_format(b"", name) == expected

    def test_unknown_format_names_the_supported_ones(self) -> None:
        with pytest.raises(TrackFileError, match="supported: gpx, nmea, csv, geojson"):
            parse_file(b"hello", device="d")
        with pytest.raises(TrackFileError, match="supported: gpx, nmea, csv, geojson"):
            parse_file(b"x", format="kml", device="d")

    def test_str_is_a_path(self, tmp_path: Path) -> None:
        path = tmp_path / "log.txt"
        path.write_bytes((DATA / "drive_truncated.nmea").read_bytes())
        assert parse_file(str(path), device="d").format == "nmea"
