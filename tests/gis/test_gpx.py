"""Track export as GPX 1.1: valid XML in the GPX namespace, every fix once in order (UTC times,
WGS-84 to 1 cm), a new segment after a long gap, names escaped — and our own GPX reader (the
upload path) reads back exactly what was written."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from api.protocols.gpx import parse_gpx
from gis.gpx import GPX_NS, track_gpx

T0 = 1_796_601_600_000_000  # 2026-12-07T00:00:00Z in µs
NS = {"g": GPX_NS}


def _track(n: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    t = T0 + np.arange(n, dtype=np.int64) * 10_000_000
    t[n // 2 :] += 3_600_000_000  # an hour parked, switched off
    lon = 116.07 + np.cumsum(rng.normal(0, 1e-4, n))
    lat = 43.93 + np.cumsum(rng.normal(0, 1e-4, n))
    speed = rng.uniform(0, 20, n)
    speed[3] = np.nan
    return t, lon, lat, speed


def test_every_fix_once_in_segments_split_at_the_gap() -> None:
    t, lon, lat, speed = _track()
    text = track_gpx("蒙H·S0401 <2026-12-07> & co", t, lon, lat, speed_ms=speed)
    root = ET.fromstring(text)  # noqa: S314 - our own output
    assert root.tag == f"{{{GPX_NS}}}gpx"
    assert root.get("version") == "1.1"
    assert root.findtext("g:trk/g:name", namespaces=NS) == "蒙H·S0401 <2026-12-07> & co"
    segments = root.findall("g:trk/g:trkseg", NS)
    assert [len(s.findall("g:trkpt", NS)) for s in segments] == [25, 25]
    points = root.findall("g:trk/g:trkseg/g:trkpt", NS)
    assert np.allclose([float(p.get("lon") or 0) for p in points], lon, atol=1e-7)
    assert np.allclose([float(p.get("lat") or 0) for p in points], lat, atol=1e-7)
    assert points[0].findtext("g:time", namespaces=NS) == "2026-12-07T00:00:00Z"
    assert points[3].find("g:extensions", NS) is None  # no speed: none written
    assert points[4].findtext("g:extensions/g:speed", namespaces=NS) == f"{speed[4]:.2f}"


def test_our_reader_reads_back_what_was_written() -> None:
    t, lon, lat, speed = _track()
    parsed = parse_gpx(track_gpx("x", t, lon, lat, speed_ms=speed).encode(), device="d1")
    assert parsed.errors == []
    assert parsed.stopped_at is None
    fixes = parsed.fixes
    assert np.array_equal(fixes.time_us, t)
    assert np.allclose(fixes.lon, lon, atol=1e-7)
    assert np.allclose(fixes.lat, lat, atol=1e-7)
    known = np.isfinite(speed)
    assert np.allclose(fixes.speed[known], speed[known], atol=0.005)


def test_fractions_of_a_second_are_kept() -> None:
    t, lon, lat, _ = _track(4)
    t = t + np.array([0, 1, 250_000, 999_999])
    parsed = parse_gpx(track_gpx("x", t, lon, lat).encode(), device="d1")
    assert np.array_equal(parsed.fixes.time_us, t)
    whole = track_gpx("x", t - t % 1_000_000, lon, lat)
    assert "<time>2026-12-07T00:00:00Z</time>" in whole


def test_an_empty_day_is_a_valid_empty_track() -> None:
    root = ET.fromstring(track_gpx("empty", [], [], []))  # noqa: S314 - our own output
    assert root.findall("g:trk/g:trkseg/g:trkpt", NS) == []


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        track_gpx("x", [T0, T0 + 1], [116.0], [43.0, 43.1])
    with pytest.raises(ValueError, match="ascending"):
        track_gpx("x", [T0 + 1, T0], [116.0, 116.1], [43.0, 43.1])
