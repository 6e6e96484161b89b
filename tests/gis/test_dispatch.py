"""Dispatch maths: terrain classes, ETAs, exclusion reasons, ranking, the KNN bound and
escalation steps, with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gis.crs import haversine_m
from gis.dispatch import (
    BUSY,
    DISABLED,
    OFF_DUTY,
    OFFLINE,
    STALE,
    EtaModel,
    escalation_steps,
    exclusion_reasons,
    great_circle_m,
    knn_lower_bound_m,
    rank_order,
    terrain_class,
    unit_code,
)


@pytest.mark.parametrize(
    ("code", "terrain"),
    [
        ("152502100201", "rural"),  # 嘎查/村委会 of a town
        ("152531100001", "urban"),  # 社区居委会
        ("152502001005", "urban"),  # any unit of a 街道 (sub-district)
        ("152522200205", "rural"),  # 苏木
        (None, "rural"),
        ("15250", "rural"),
    ],
)
def test_terrain_class_follows_the_nbs_code(code: str | None, terrain: str) -> None:
    assert terrain_class(code) == terrain


def test_unit_codes_widen_from_village_to_county() -> None:
    village = "152531100205"
    assert [unit_code(level, village) for level in range(4)] == [
        None,
        "152531100205",
        "152531100",
        "152531",
    ]
    assert unit_code(2, None) is None


def test_straight_eta_is_distance_times_detour_over_the_terrain_speed() -> None:
    model = EtaModel(speeds_kmh={"urban": 36.0, "rural": 72.0}, worker_kmh=18.0, detour=1.5)
    eta = model.straight_eta_s([1000.0, 2000.0], "rural", worker=[False, True])
    # 1 km × 1.5 at 20 m/s = 75 s; 2 km × 1.5 at 5 m/s = 600 s
    assert eta == pytest.approx([75.0, 600.0])
    assert model.straight_eta_s(1000.0, "urban") == pytest.approx(150.0)
    assert model.straight_eta_s(1000.0, "moon") == pytest.approx(150.0)  # slowest class


def test_road_eta_adds_the_off_road_legs_and_keeps_no_route() -> None:
    model = EtaModel(offroad_kmh=18.0)  # 5 m/s
    eta = model.road_eta_s([600.0, np.nan], [100.0, 50.0], 50.0)
    assert eta[0] == pytest.approx(600.0 + 150.0 / 5.0)
    assert np.isnan(eta[1])


def test_eta_model_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="detour"):
        EtaModel(detour=0.5)
    with pytest.raises(ValueError, match="speed"):
        EtaModel(speeds_kmh={"rural": 0.0})


def test_exclusion_reasons_in_order_of_severity() -> None:
    reasons = exclusion_reasons(
        ["available", "busy", "available", "available", "off_duty", "busy", "available"],
        [10.0, 10.0, 600.0, 7200.0, 10.0, np.nan, 10.0],
        [True, True, True, True, True, True, False],
        max_age_s=300.0,
        offline_after_s=3600.0,
    )
    assert reasons.tolist() == ["", BUSY, STALE, OFFLINE, OFF_DUTY, OFFLINE, DISABLED]


def test_rank_order_is_eta_then_distance_then_freshness_with_nan_last() -> None:
    order = rank_order(
        eta_s=[300.0, np.nan, 100.0, 300.0, 300.0],
        distance_m=[5000.0, 10.0, 9000.0, 4000.0, 4000.0],
        age_s=[5.0, 1.0, 50.0, 30.0, np.nan],
    )
    assert order.tolist() == [2, 3, 4, 0, 1]


def test_great_circle_is_haversine() -> None:
    d = great_circle_m([116.0, 116.01], [44.0, 44.0], 116.0, 44.01)
    assert d == pytest.approx(haversine_m([116.0, 116.01], [44.0, 44.0], 116.0, 44.01))
    assert d[0] == pytest.approx(1112.0, abs=1.0)


def test_knn_bound_never_exceeds_the_true_distance_at_that_planar_radius() -> None:
    rng = np.random.default_rng(3)
    lat0, lon0, r = 43.0, 116.0, 0.05
    angle = rng.uniform(0, 2 * np.pi, 1000)
    lon, lat = lon0 + r * np.cos(angle), lat0 + r * np.sin(angle)
    true = haversine_m(lon, lat, lon0, lat0)
    assert true.min() >= knn_lower_bound_m(r, lat0)


def test_an_incident_escalates_one_level_per_period_until_the_county() -> None:
    steps = escalation_steps([0.0], [0], 299.0, after_s=300.0)
    assert len(steps.incident) == 0
    assert steps.new_level.tolist() == [0]
    steps = escalation_steps([0.0], [0], 301.0, after_s=300.0)
    assert steps.level.tolist() == [1]
    assert steps.at_s.tolist() == [300.0]
    # an overdue tick records every missed step at its own due time, and stops at the top
    steps = escalation_steps([1000.0, 0.0, 50.0], [1, 0, 3], 5000.0, after_s=300.0)
    assert steps.incident.tolist() == [0, 0, 1, 1, 1]
    assert steps.level.tolist() == [2, 3, 1, 2, 3]
    assert steps.at_s.tolist() == [1300.0, 1600.0, 300.0, 600.0, 900.0]
    assert steps.new_level.tolist() == [3, 3, 3]
    assert steps.new_at_s.tolist() == [1600.0, 900.0, 50.0]
    with pytest.raises(ValueError, match="positive"):
        escalation_steps([0.0], [0], 1.0, after_s=0.0)
