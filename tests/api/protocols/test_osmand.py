"""The OsmAnd / Traccar Client protocol parser: every request form, every field, every 400."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest

from api.ingest.fixes import FixBatch, to_time_us
from api.protocols.osmand import (
    OsmAndError,
    OsmAndFix,
    parse_json,
    parse_params,
    parse_query,
    read_params,
    read_query,
    to_batch,
)

NOW = to_time_us(datetime(2026, 11, 24, 8, 30, tzinfo=UTC))
T0 = to_time_us(datetime(2026, 11, 24, 8, 0, tzinfo=UTC))
KNOT = 1852 / 3600

# What Traccar Client (Android) sends: GET/POST with these query fields
TRACCAR_CLIENT = (
    "id=864895030281234&timestamp=1795507200&lat=43.9333&lon=116.0754&speed=21.3"
    "&bearing=62.5&altitude=1003.4&accuracy=4.8&batt=87.0&charge=false"
)


def extras(fix: OsmAndFix) -> dict[str, object]:
    return orjson.loads(fix.extras) if fix.extras else {}


class TestQueryAndForm:
    def test_traccar_client_get(self) -> None:
        fix = read_query(TRACCAR_CLIENT, now_us=NOW)
        assert fix.device == "864895030281234"
        assert fix.time_us == T0
        assert (fix.lat, fix.lon) == (43.9333, 116.0754)
        assert fix.speed == pytest.approx(21.3 * KNOT)  # knots → m/s
        assert fix.speed == pytest.approx(10.9577, abs=1e-4)
        assert (fix.course, fix.altitude, fix.accuracy, fix.battery) == (62.5, 1003.4, 4.8, 87.0)
        assert extras(fix) == {"charge": False}
        assert fix.raw == TRACCAR_CLIENT

    def test_form_post_body_as_bytes_with_percent_encoding(self) -> None:
        body = b"deviceid=%E8%92%99H%C2%B70001&lat=43.9333&lng=116.0754&timestamp=1795507200"
        fix = read_query(body, now_us=NOW)
        assert fix.device == "蒙H·0001"
        assert fix.lon == 116.0754
        assert fix.raw == body.decode()

    def test_params_as_mapping_or_pairs(self) -> None:
        pairs = [("id", "abc"), ("lat", "1.5"), ("lon", "2.5"), ("lat", "43.9")]
        assert read_params(pairs, now_us=NOW).lat == 43.9  # the last of a repeated field wins
        fix = read_params({"id": "abc", "lat": "43.9", "lon": "116.1"}, now_us=NOW)
        assert fix.time_us == NOW  # no timestamp: the caller's clock
        assert fix.raw == "id=abc&lat=43.9&lon=116.1"

    def test_location_field(self) -> None:
        fix = read_query("id=a&location=43.9333,116.0754", now_us=NOW)
        assert (fix.lat, fix.lon) == (43.9333, 116.0754)

    def test_missing_optional_fields_are_nan(self) -> None:
        fix = read_query("id=a&lat=1&lon=2&speed=", now_us=NOW)
        for value in (fix.speed, fix.course, fix.altitude, fix.accuracy, fix.battery):
            assert math.isnan(value)
        assert fix.extras is None

    @pytest.mark.parametrize(
        ("field", "value"),
        [("heading", "270"), ("bearing", "270"), ("alt", "12.5"), ("battery", "55")],
    )
    def test_aliases(self, field: str, value: str) -> None:
        fix = read_query(f"id=a&lat=1&lon=2&{field}={value}", now_us=NOW)
        assert float(value) in (fix.course, fix.altitude, fix.battery)

    def test_negative_speed_course_accuracy_mean_unknown(self) -> None:
        fix = read_query("id=a&lat=1&lon=2&speed=-1&bearing=-1&accuracy=-1", now_us=NOW)
        assert math.isnan(fix.speed)
        assert math.isnan(fix.course)
        assert math.isnan(fix.accuracy)


class TestTimestamps:
    @pytest.mark.parametrize(
        "value",
        [
            "1795507200",  # unix seconds
            "1795507200000",  # milliseconds (≥ 2^31)
            "1795507200.0",
            "2026-11-24T08:00:00Z",
            "2026-11-24T08:00:00.000Z",
            "2026-11-24T16:00:00%2B08:00",  # '+' percent-encoded
            "2026-11-24T16:00:00+08:00",  # '+' left raw: decoded as a space, then restored
            "2026-11-24 08:00:00",  # naive: UTC
            "20261124T080000Z",
        ],
    )
    def test_forms(self, value: str) -> None:
        assert read_query(f"id=a&lat=1&lon=2&timestamp={value}", now_us=NOW).time_us == T0

    def test_time_alias_and_fraction(self) -> None:
        fix = read_query("id=a&lat=1&lon=2&time=1795507200123", now_us=NOW)
        assert fix.time_us == T0 + 123_000

    def test_threshold_is_two_to_the_31(self) -> None:
        below = read_query(f"id=a&lat=1&lon=2&timestamp={2**31 - 1}", now_us=NOW)
        at = read_query(f"id=a&lat=1&lon=2&timestamp={2**31}", now_us=NOW)
        assert below.time_us == (2**31 - 1) * 1_000_000
        assert at.time_us == 2**31 * 1000


class TestExtras:
    def test_unknown_fields_are_kept_typed(self) -> None:
        query = (
            "id=a&lat=1&lon=2&hdop=0.9&valid=false&driverUniqueId=0042&charge=true"
            "&odometer=12345&motion=true&iccid=0089860012&cell=460,0,1234,5678&note=hello+world"
        )
        assert extras(read_query(query, now_us=NOW)) == {
            "hdop": 0.9,
            "valid": False,
            "driverUniqueId": "0042",
            "charge": True,
            "odometer": 12345,
            "motion": True,
            "iccid": "0089860012",  # leading zeros kept as text
            "cell": "460,0,1234,5678",
            "note": "hello world",
        }

    @pytest.mark.parametrize("value", ["true", "1", "TRUE"])
    def test_valid_fix_carries_no_flag(self, value: str) -> None:
        assert read_query(f"id=a&lat=1&lon=2&valid={value}", now_us=NOW).extras is None

    def test_invalid_fix_is_parsed_and_flagged(self) -> None:
        fix = read_query("id=a&lat=1&lon=2&valid=0", now_us=NOW)
        assert fix.lat == 1
        assert extras(fix) == {"valid": False}


class TestBadRequests:
    @pytest.mark.parametrize(
        ("query", "field", "reason"),
        [
            ("lat=1&lon=2", "id", "missing"),
            ("id=&lat=1&lon=2", "id", "missing"),
            (f"id={'x' * 200}&lat=1&lon=2", "id", "longer than 128 characters"),
            ("id=a&lon=2", "lat", "missing"),
            ("id=a&lat=1", "lon", "missing"),
            ("id=a&lat=north&lon=2", "lat", "not a number"),
            ("id=a&lat=91&lon=2", "lat", "out of range -90..90"),
            ("id=a&lat=1&lon=-180.5", "lon", "out of range -180..180"),
            ("id=a&lat=1&lng=abc", "lng", "not a number"),
            ("id=a&lat=nan&lon=2", "lat", "not a finite number"),
            ("id=a&lat=1_0&lon=2", "lat", "not a finite number"),
            ("id=a&location=43.9", "location", "not lat,lon"),
            ("id=a&location=43.9,east", "location", "not a number"),
            ("id=a&lat=1&lon=2&timestamp=yesterday", "timestamp", "not unix"),
            ("id=a&lat=1&lon=2&time=1e30", "time", "out of range"),
            ("id=a&lat=1&lon=2&timestamp=-5", "timestamp", "out of range"),
            ("id=a&lat=1&lon=2&speed=fast", "speed", "not a number"),
            ("id=a&lat=1&lon=2&bearing=361", "bearing", "out of range 0..360"),
            ("id=a&lat=1&lon=2&altitude=high", "altitude", "not a number"),
            ("id=a&lat=1&lon=2&accuracy=x", "accuracy", "not a number"),
            ("id=a&lat=1&lon=2&hdop=x", "hdop", "not a number"),
            ("id=a&lat=1&lon=2&batt=120", "batt", "out of range 0..100"),
            ("id=a&lat=1&lon=2&valid=maybe", "valid", "not true/false/1/0"),
            ("id=a&lat=1&lon=2&charge=2", "charge", "not true/false/1/0"),
        ],
    )
    def test_field_is_named(self, query: str, field: str, reason: str) -> None:
        with pytest.raises(OsmAndError) as caught:
            read_query(query, now_us=NOW)
        assert caught.value.field == field
        assert caught.value.reason.startswith(reason)
        assert str(caught.value).startswith(f"{field}: ")

    def test_is_a_value_error(self) -> None:
        assert issubclass(OsmAndError, ValueError)


# Traccar Client 9 (transistorsoft background geolocation) posts this
CLIENT_9_BODY = {
    "device_id": "864895030281234",
    "location": {
        "timestamp": "2026-11-24T08:00:00.000Z",
        "coords": {
            "latitude": 43.9333,
            "longitude": 116.0754,
            "accuracy": 4.8,
            "speed": 10.96,
            "heading": 62.5,
            "altitude": 1003.4,
            "speed_accuracy": 0.5,
        },
        "is_moving": True,
        "odometer": 12345.6,
        "event": "motionchange",
        "activity": {"type": "in_vehicle", "confidence": 100},
        "battery": {"level": 0.87, "is_charging": False},
        "uuid": "b3e9c2a0-0000-4000-8000-000000000001",
    },
}


class TestJsonBody:
    def test_traccar_client_9_body(self) -> None:
        body = orjson.dumps(CLIENT_9_BODY)
        batch = parse_json(body, now_us=NOW)
        assert isinstance(batch, FixBatch)
        assert len(batch) == 1
        assert batch.device[0] == "864895030281234"
        assert batch.time_us[0] == T0
        assert (batch.lat[0], batch.lon[0]) == (43.9333, 116.0754)
        assert batch.speed[0] == 10.96  # m/s as sent
        assert (batch.course[0], batch.altitude[0], batch.accuracy[0]) == (62.5, 1003.4, 4.8)
        assert batch.battery[0] == pytest.approx(87.0)
        assert orjson.loads(batch.extras[0]) == {
            "is_moving": True,
            "odometer": 12345.6,
            "event": "motionchange",
            "activity": {"type": "in_vehicle", "confidence": 100},
            "uuid": "b3e9c2a0-0000-4000-8000-000000000001",
            "speed_accuracy": 0.5,
            "charge": False,
        }
        assert batch.raw[0] == body.decode()

    def test_unknown_speed_and_heading(self) -> None:
        body = {"device_id": "a", "location": {"coords": {"latitude": 1, "longitude": 2}}}
        body["location"]["coords"].update(speed=-1, heading=-1)  # type: ignore[index]
        batch = parse_json(orjson.dumps(body), now_us=NOW)
        assert math.isnan(batch.speed[0])
        assert math.isnan(batch.course[0])
        assert batch.time_us[0] == NOW  # no timestamp

    def test_batch_sync_location_list(self) -> None:
        locations = [
            {"timestamp": f"2026-11-24T08:00:0{i}Z", "coords": {"latitude": 43.9, "longitude": i}}
            for i in range(3)
        ]
        batch = parse_json(orjson.dumps({"device_id": "a", "location": locations}), now_us=NOW)
        assert list(batch.lon) == [0, 1, 2]
        assert list(batch.time_us) == [T0, T0 + 1_000_000, T0 + 2_000_000]
        assert list(batch.row) == [1, 2, 3]
        assert orjson.loads(batch.raw[1]) == locations[1]

    def test_top_level_list(self) -> None:
        item = {"location": {"coords": {"latitude": 1, "longitude": 2}}}
        body = [{"device_id": "a", **item}, {"device_id": "b", **item}]
        assert list(parse_json(orjson.dumps(body), now_us=NOW).device) == ["a", "b"]

    def test_location_at_top_level_and_device_from_caller(self) -> None:
        body = {"coords": {"latitude": 1, "longitude": 2}, "timestamp": 1795507200}
        batch = parse_json(orjson.dumps(body), now_us=NOW, device="from-query")
        assert batch.device[0] == "from-query"
        assert batch.time_us[0] == T0

    @pytest.mark.parametrize(
        ("body", "field", "reason"),
        [
            (b"{not json", "body", "not JSON"),
            (b'{"location": {"coords": {"latitude": 1, "longitude": 2}}}', "device_id", "missing"),
            (b'{"device_id": "a"}', "location", "missing"),
            (b'{"device_id": "a", "location": {}}', "location.coords", "missing"),
            (
                b'{"device_id": "a", "location": {"coords": {"longitude": 2}}}',
                "location.coords.latitude",
                "missing",
            ),
            (
                b'{"device_id": "a", "location": {"coords": {"latitude": "1", "longitude": 2}}}',
                "location.coords.latitude",
                "not a number",
            ),
            (
                (
                    b'{"device_id": "a", "location": [{"coords": {"latitude": 1, "longitude": 2}},'
                    b' {"coords": {"latitude": 1, "longitude": 200}}]}'
                ),
                "location[1].coords.longitude",
                "out of range -180..180",
            ),
            (
                (
                    b'{"device_id": "a", "location": {"timestamp": "soon",'
                    b' "coords": {"latitude": 1, "longitude": 2}}}'
                ),
                "location.timestamp",
                "not unix",
            ),
            (
                (
                    b'{"device_id": "a", "location": {"battery": {"level": 1.5},'
                    b' "coords": {"latitude": 1, "longitude": 2}}}'
                ),
                "location.battery.level",
                "out of range 0..1",
            ),
            (b"[1]", "[0]", "not an object"),
        ],
    )
    def test_field_is_named(self, body: bytes, field: str, reason: str) -> None:
        with pytest.raises(OsmAndError) as caught:
            parse_json(body, now_us=NOW)
        assert caught.value.field == field
        assert caught.value.reason.startswith(reason)


def test_parse_forms_give_a_batch_of_one_for_the_writer() -> None:
    batch = parse_query(TRACCAR_CLIENT, now_us=NOW)
    assert isinstance(batch, FixBatch)
    assert len(batch) == 1
    fix = read_query(TRACCAR_CLIENT, now_us=NOW)
    for name in ("device", "time_us", "lat", "lon", "course", "altitude", "battery", "extras"):
        assert getattr(batch, name)[0] == getattr(fix, name)
    assert batch.raw[0] == TRACCAR_CLIENT
    assert list(batch.row) == [1]
    pairs = parse_params([("id", "a"), ("lat", "1"), ("lon", "2")], now_us=NOW)
    assert pairs.device[0] == "a"
    assert pairs.time_us[0] == NOW
    assert math.isnan(pairs.speed[0])
    assert FixBatch.concat([batch, pairs]).lat.tolist() == [43.9333, 1.0]


def test_fixes_of_many_requests_make_one_batch() -> None:
    fixes = [read_query(f"id=d{i}&lat=1&lon={i}&speed=1", now_us=NOW) for i in range(3)]
    batch = to_batch(fixes)
    assert list(batch.device) == ["d0", "d1", "d2"]
    assert list(batch.lon) == [0, 1, 2]
    assert batch.speed[0] == pytest.approx(KNOT)
    assert len(fixes[0].to_batch()) == 1
