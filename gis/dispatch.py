"""Nearest-responder maths: ETAs, exclusion reasons, ranking, escalation steps (pure numpy).

The database finds a short list of responders near an incident (a KNN index scan); everything
here ranks that list. A straight-line ETA is the great-circle distance times a detour factor
divided by a speed for the incident's terrain class; a road ETA is the network time (pgRouting)
plus the off-road legs from each end to its nearest road node. Escalation (网格预警 → 吹哨 →
报到) widens the responders from the incident's grid to its village, township and county, one
level every ``after_s`` seconds without an acceptance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gis.crs import haversine_m
from gis.units import METRES_PER_DEGREE_SPHERE

LEVELS = ("grid", "village", "township", "county")
LEVEL_LABELS = ("网格预警", "村级吹哨", "苏木乡镇吹哨", "旗县部门报到")
TOP_LEVEL = len(LEVELS) - 1
# digits of the admin code that name the unit of each level above the grid
LEVEL_DIGITS = {1: 12, 2: 9, 3: 6}
URBAN, RURAL = "urban", "rural"
DEFAULT_SPEEDS_KMH: Mapping[str, float] = {URBAN: 30.0, RURAL: 50.0}

# reasons a responder near the incident is not offered
BUSY, OFF_DUTY, STALE, OFFLINE, DISABLED = "busy", "off_duty", "stale", "offline", "disabled"
TOO_FAR, NO_ROUTE, INACTIVE = "too_far", "no_route", "inactive"
REASONS = (BUSY, OFF_DUTY, STALE, OFFLINE, DISABLED, TOO_FAR, NO_ROUTE, INACTIVE)

FloatArray = NDArray[np.float64]


def terrain_class(village_code: str | None) -> str:
    """Terrain class of a place from its NBS village code.

    Parameters
    ----------
    village_code : str or None
        12-digit code of the village (嘎查/村) or community (居委会) holding the place.

    Returns
    -------
    str
        ``urban`` for a residents' committee (village digits 001–199) or any unit of a
        sub-district (街道, township digits 001–099): streets, traffic; else ``rural``
        (grassland tracks, long straight runs). Unknown places are ``rural``.
    """
    if not village_code or len(village_code) != 12 or not village_code.isdigit():
        return RURAL
    if int(village_code[6:9]) < 100 or int(village_code[9:12]) < 200:
        return URBAN
    return RURAL


def unit_code(level: int, village_code: str | None) -> str | None:
    """The admin-code prefix naming the responders' unit of an escalation ``level`` ≥ 1.

    Parameters
    ----------
    level : int
        1 village, 2 township, 3 county (level 0, the grid, is named by grid codes).
    village_code : str or None
        The incident's village.

    Returns
    -------
    str or None
        12, 9 or 6 leading digits of the village code; None without a village or at level 0.
    """
    if not village_code or level not in LEVEL_DIGITS:
        return None
    return village_code[: LEVEL_DIGITS[level]]


@dataclass(frozen=True)
class EtaModel:
    """How long a responder needs to reach an incident.

    Parameters
    ----------
    speeds_kmh : Mapping[str, float]
        Vehicle speed per terrain class of the incident (``urban``, ``rural``, …), km/h.
    worker_kmh : float
        Speed of a grid worker (motorbike, horse), km/h.
    detour : float
        Road distance ÷ great-circle distance for straight-line ETAs (≥ 1).
    offroad_kmh : float
        Speed off the road network: from a responder to its nearest road node and from the
        incident's node to the incident, km/h.
    """

    speeds_kmh: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPEEDS_KMH))
    worker_kmh: float = 25.0
    detour: float = 1.3
    offroad_kmh: float = 15.0

    def __post_init__(self) -> None:
        if self.detour < 1.0:
            raise ValueError(f"detour must be ≥ 1, got {self.detour}")
        speeds = [*self.speeds_kmh.values(), self.worker_kmh, self.offroad_kmh]
        if not speeds or min(speeds) <= 0:
            raise ValueError("every speed must be positive")

    def speed_mps(self, terrain: str) -> float:
        """Vehicle speed for a terrain class (the slowest class when unknown), m/s."""
        kmh = self.speeds_kmh.get(terrain, min(self.speeds_kmh.values()))
        return kmh / 3.6

    def straight_eta_s(
        self, distance_m: ArrayLike, terrain: str, *, worker: ArrayLike = False
    ) -> FloatArray:
        """Straight-line ETA: ``distance × detour / speed`` in seconds.

        Parameters
        ----------
        distance_m : array_like
            Great-circle distances from responders to the incident, metres.
        terrain : str
            Terrain class of the incident (see ``terrain_class``).
        worker : array_like of bool
            True where the responder is a grid worker (``worker_kmh`` applies).
        """
        distance = np.asarray(distance_m, dtype=np.float64)
        speed = np.where(np.asarray(worker, bool), self.worker_kmh / 3.6, self.speed_mps(terrain))
        return distance * self.detour / speed

    def road_eta_s(
        self, network_s: ArrayLike, access_m: ArrayLike, incident_access_m: float
    ) -> FloatArray:
        """Road ETA: off-road leg to the network + network time + off-road leg to the incident.

        Parameters
        ----------
        network_s : array_like
            Shortest network time from each responder's node to the incident's node, seconds
            (NaN where unreachable, which stays NaN).
        access_m : array_like
            Distance from each responder to its nearest road node, metres.
        incident_access_m : float
            Distance from the incident's nearest road node to the incident, metres.
        """
        offroad = self.offroad_kmh / 3.6
        access = np.asarray(access_m, dtype=np.float64) + incident_access_m
        return np.asarray(network_s, dtype=np.float64) + access / offroad


def great_circle_m(lon: ArrayLike, lat: ArrayLike, lon0: float, lat0: float) -> FloatArray:
    """Great-circle distances from points to ``(lon0, lat0)``, metres (WGS-84 degrees in)."""
    return haversine_m(lon, lat, lon0, lat0)


def exclusion_reasons(
    status: ArrayLike,
    age_s: ArrayLike,
    enabled: ArrayLike,
    *,
    max_age_s: float,
    offline_after_s: float,
) -> NDArray[np.object_]:
    """Why each vehicle cannot be offered ('' when it can).

    Parameters
    ----------
    status : array_like of str
        ``device_state.status``: available, busy, off_duty.
    age_s : array_like of float
        Age of the vehicle's last fix, seconds (NaN: it never reported).
    enabled : array_like of bool
        Whether the device is enabled.
    max_age_s : float
        A fix older than this is ``stale``.
    offline_after_s : float
        No fix for this long (or ever) is ``offline``.

    Returns
    -------
    ndarray of str
        One reason per vehicle, checked in order disabled, offline, stale, off_duty, busy.
    """
    status = np.asarray(status, dtype=object)
    age = np.asarray(age_s, dtype=np.float64)
    out = np.full(len(status), "", dtype=object)
    out[status == BUSY] = BUSY
    out[status == OFF_DUTY] = OFF_DUTY
    out[age > max_age_s] = STALE
    out[~(age <= offline_after_s)] = OFFLINE  # NaN (never reported) included
    out[~np.asarray(enabled, bool)] = DISABLED
    return out


def rank_order(eta_s: ArrayLike, distance_m: ArrayLike, age_s: ArrayLike) -> NDArray[np.intp]:
    """Indices by ETA, then distance, then fix age (fresher first); NaN ETAs last."""
    eta = np.asarray(eta_s, dtype=np.float64)
    dist = np.asarray(distance_m, dtype=np.float64)
    age = np.nan_to_num(np.asarray(age_s, dtype=np.float64), nan=np.inf)
    return np.lexsort((age, dist, np.where(np.isnan(eta), np.inf, eta)))


def knn_lower_bound_m(knn_deg: float, lat: float) -> float:
    """A lower bound of the true distance of any point farther than ``knn_deg`` in planar
    degrees (what a geometry KNN scan orders by) from a point at latitude ``lat``, metres.

    A degree of longitude shrinks by cos(latitude), so the bound uses the highest latitude the
    circle can reach. Used to check that a KNN short list holds the true nearest responders.
    """
    top = min(89.9, abs(lat) + knn_deg)
    return float(knn_deg * METRES_PER_DEGREE_SPHERE * np.cos(np.radians(top)))


@dataclass(frozen=True)
class EscalationSteps:
    """Escalations due: one row per step (an incident may take several when overdue).

    ``incident`` indexes the input arrays; ``level`` is the level reached by the step and
    ``at_s`` the time it fell due (epoch seconds). ``new_level`` / ``new_at_s`` are per input.
    """

    incident: NDArray[np.intp]
    level: NDArray[np.int64]
    at_s: FloatArray
    new_level: NDArray[np.int64]
    new_at_s: FloatArray


def escalation_steps(
    since_s: ArrayLike,
    level: ArrayLike,
    now_s: float,
    *,
    after_s: float,
    top: int = TOP_LEVEL,
) -> EscalationSteps:
    """The escalation steps due by ``now_s`` for incidents nobody has accepted.

    Parameters
    ----------
    since_s : array_like of float
        When each incident reached its current level (creation or last escalation), epoch s.
    level : array_like of int
        Current escalation level of each incident (0 grid … 3 county).
    now_s : float
        The clock, epoch seconds.
    after_s : float
        T: the wait without an acceptance before the next level, seconds (> 0).
    top : int
        The highest level.

    Returns
    -------
    EscalationSteps
        Each step falls due at ``since + n·T`` (so a late tick records the true times), and
        ``new_at_s`` is the time of an incident's last step (unchanged without one).
    """
    if after_s <= 0:
        raise ValueError("after_s must be positive")
    since = np.asarray(since_s, dtype=np.float64)
    current = np.asarray(level, dtype=np.int64)
    due = np.floor(np.maximum(now_s - since, 0.0) / after_s).astype(np.int64)
    steps = np.clip(np.minimum(due, top - current), 0, None)
    incident = np.repeat(np.arange(len(since)), steps)
    starts = np.cumsum(steps) - steps
    nth = np.arange(len(incident)) - np.repeat(starts, steps) + 1  # 1, 2, … per incident
    return EscalationSteps(
        incident=incident,
        level=current[incident] + nth,
        at_s=since[incident] + nth * after_s,
        new_level=current + steps,
        new_at_s=since + steps * after_s,
    )
