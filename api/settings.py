"""Settings, one class per concern, each with its own environment prefix.

Every value can be set in the environment (or a ``.env`` file in the working directory).
The README lists them; ``gridpatrol settings`` prints the effective values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", extra="ignore", populate_by_name=True
    )


class DatabaseSettings(BaseSettings):
    """Where the one PostgreSQL + PostGIS store lives (``GRIDPATROL_DB_…``, ``DATABASE_URL``)."""

    model_config = _config("GRIDPATROL_DB_")

    url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "GRIDPATROL_DB_URL"),
        description="External database; when set no embedded cluster is managed.",
    )
    read_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_READ_URL", "GRIDPATROL_DB_READ_URL"),
        description="a streaming replica of the database for reads that may lag (tiles, "
        "coverage figures, reports); unset: everything reads the primary",
    )
    read_wait_s: float = Field(
        default=2.0,
        ge=0,
        le=30,
        description="after writing what a read needs, wait at most this long for the replica to "
        "replay it, else that read goes to the primary",
    )
    data_dir: Path = Field(default=Path("var/pg"), description="Embedded cluster data directory.")
    port: int = Field(default=5433, ge=1, le=65535, description="Embedded cluster TCP port.")
    name: str = Field(default="gridpatrol", description="Database name in the embedded cluster.")
    user: str = Field(default="gridpatrol", description="Superuser of the embedded cluster.")
    pool_min: int = 2
    pool_max: int = 10
    statement_timeout_ms: int = 60_000

    @property
    def embedded(self) -> bool:
        return self.url is None


class ApiSettings(BaseSettings):
    """The HTTP API (``GRIDPATROL_API_…``)."""

    model_config = _config("GRIDPATROL_API_")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    state_dir: Path = Field(default=Path("var"), description="Admin token, logs, reports.")
    token_cache_seconds: float = Field(default=5.0, ge=0, description="Token lookup cache TTL.")
    public_tiles: bool = False
    trusted_proxies: str = Field(
        default="",
        description="reverse proxies (addresses or networks, comma-separated) whose "
        "X-Forwarded-For/-Proto are believed; empty: none",
    )
    cpu_workers: int = Field(
        default=2, ge=1, le=64, description="processes for GPX/XLSX parsing and siting"
    )
    cpu_threads: int = Field(default=4, ge=1, le=64, description="threads for geometry edits")
    cpu_queue: int = Field(
        default=16, ge=0, description="CPU jobs waiting for a worker before 503 (per kind)"
    )
    siting_max_candidates: int = Field(
        default=2000, ge=1, description="alert-point siting: most candidate points (422 beyond)"
    )
    siting_max_pairs: int = Field(
        default=10_000_000, ge=1, description="alert-point siting: most candidates × demand"
    )
    max_body_mb: float = Field(
        default=1.0, gt=0, description="Largest JSON request body (uploads: INGEST_MAX_BODY_MB)."
    )
    max_connections: int = Field(
        default=1000, ge=1, description="open HTTP connections (≤ 10 % of the fd limit)"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a request's line and headers must arrive within this"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="longest pause while a request body is being received"
    )
    max_request_line_kb: float = Field(default=8.0, gt=0, description="longest request line: 414")
    max_header_kb: float = Field(default=32.0, gt=0, description="all headers together: 431")
    max_headers: int = Field(default=100, ge=1, description="header lines per request: 431")


class IngestSettings(BaseSettings):
    """GPS ingest filters and the write path (``GRIDPATROL_INGEST_…``). A filter is off when its
    limit is 0 (or its switch false)."""

    model_config = _config("GRIDPATROL_INGEST_")

    max_future_s: float = Field(default=300.0, ge=0, description="fix time ahead of now")
    max_age_days: float = Field(default=30.0, ge=0, description="fix time behind now")
    max_speed_mps: float = Field(default=70.0, ge=0, description="implied speed between fixes")
    max_accuracy_m: float = Field(default=500.0, ge=0, description="worst horizontal accuracy")
    service_area: bool = Field(default=True, description="refuse fixes outside the boundaries")
    service_area_margin_km: float = Field(default=50.0, ge=0)
    online_s: float = Field(default=300.0, gt=0, description="a device is online this long")
    partitions_ahead_days: int = Field(default=2, ge=1)
    writer_max_batch: int = Field(default=5000, ge=1, description="fixes per group commit")
    max_body_mb: float = Field(default=64.0, gt=0, description="largest batch or file upload")
    rate_per_s: float = Field(
        default=20.0, ge=0, description="ingest requests per second per device (0: no limit)"
    )
    rate_burst: float = Field(default=200.0, ge=1, description="ingest requests in a burst")


class OsmAndSettings(BaseSettings):
    """The OsmAnd / Traccar Client HTTP protocol server (``GRIDPATROL_OSMAND_…``)."""

    model_config = _config("GRIDPATROL_OSMAND_")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=5055, ge=0, le=65535, description="0 = any free port")
    max_connections: int = Field(
        default=7500, ge=1, description="open device connections (≤ 40 % of the fd limit)"
    )
    idle_timeout_s: float = Field(default=120.0, gt=0)
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a request's line and headers must arrive within this"
    )
    body_timeout_s: float = Field(default=10.0, gt=0, description="a request's body, likewise")
    max_request_line_kb: float = Field(default=8.0, gt=0, description="longest request line: 414")
    max_header_kb: float = Field(default=16.0, gt=0, description="all headers together: 431")
    max_headers: int = Field(default=64, ge=1, description="header lines per request: 431")
    require_key: bool = Field(
        default=False,
        description="refuse fixes of legacy devices that have no OsmAnd key yet "
        "(devices with a key must always send it)",
    )
    address_rate_per_s: float = Field(
        default=1000.0, ge=0, description="requests per second per source address (0: no limit)"
    )
    address_burst: float = Field(default=10_000.0, ge=1, description="requests in a burst")
    refusal_rate_per_s: float = Field(
        default=0.2,
        ge=0,
        description="refused requests (unknown id, wrong key, unparsable) per second per "
        "source address before it gets 429 (0: no limit)",
    )
    refusal_burst: float = Field(default=20.0, ge=1, description="refusals in a burst")


class Jt808Settings(BaseSettings):
    """The JT/T 808 terminal server, editions 2013 and 2019 (``GRIDPATROL_JT808_…``)."""

    model_config = _config("GRIDPATROL_JT808_")

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=5015, ge=0, le=65535, description="0 = any free port")
    max_connections: int = Field(default=20_000, ge=1)
    idle_timeout_s: float = Field(default=180.0, gt=0, description="no valid frame this long")
    auth_timeout_s: float = Field(default=60.0, gt=0, description="to register + authenticate")
    max_auth_failures: int = Field(
        default=3, ge=1, description="refused registrations/authentications, then closed"
    )
    auto_register: bool = Field(default=False, description="register unknown terminals")
    match_identifier: bool = Field(
        default=False,
        description="opt-in: a device whose identifier is the phone is its terminal's "
        "(else only an operator's binding, device.jt808_phone)",
    )
    reregister_quiet_s: float = Field(
        default=600.0,
        ge=0,
        description="a registered terminal connected, or heard from this recently, is not "
        "registered again (0: only while connected)",
    )
    auto_register_crs: Literal["wgs84", "cgcs2000", "gcj02", "bd09"] = "wgs84"
    max_frame_bytes: int = Field(default=4096, ge=64, description="escaped bytes per frame")
    max_pending_frames: int = Field(default=256, ge=1, description="per connection, then pause")
    reassembly_timeout_s: float = Field(default=60.0, gt=0, description="incomplete subpackages")
    resend_after_s: float = Field(default=5.0, gt=0, description="then ask 0x8003 for the rest")
    max_resend_requests: int = Field(default=2, ge=0, description="0x8003 per message")
    max_message_kb: int = Field(default=256, ge=1, description="one reassembled message")
    max_reassembly_mb: int = Field(default=64, ge=1, description="all incomplete messages")


# the parts of a vehicle's patrol-work score and their default weights (api.coverage.vehicles)
RANK_WEIGHTS = {"own_coverage": 0.4, "km": 0.25, "hours": 0.15, "visits": 0.2, "inside_share": 0.0}


class CoverageSettings(BaseSettings):
    """The coverage engine and its reports (``GRIDPATROL_COVERAGE_…``)."""

    model_config = _config("GRIDPATROL_COVERAGE_")

    resolution: int = Field(default=9, ge=5, le=12, description="H3 resolution of fine cells")
    max_gap_s: float = Field(default=300.0, gt=0, le=3600, description="longest bridged gap")
    max_speed_mps: float = Field(default=40.0, gt=0, description="fastest plausible segment")
    visit_gap_s: float = Field(default=1800.0, gt=0, description="gap that splits visits")
    sight_m: float = Field(default=0.0, ge=0, description="cells this close to the path count")
    update_interval_s: float = Field(default=30.0, gt=0, description="background update period")
    batch_device_days: int = Field(default=500, ge=1, description="device-days per update step")
    chunk_device_days: int = Field(
        default=250, ge=1, description="device-days per pipelined chunk (≈1 M fixes at 10 s)"
    )
    claim_stale_s: float = Field(
        default=900.0, gt=0, description="a claimed device-day not done this long is free again"
    )
    max_window_days: int = Field(default=92, ge=1, description="longest report window")
    blind_spot_days: int = Field(default=7, ge=1, description="unseen this long = blind spot")
    checkpoint_radius_m: float = Field(default=300.0, gt=0, description="alert point visited")
    offline_alert_s: float = Field(default=3600.0, gt=0, description="device silent this long")
    outside_alert_s: float = Field(default=1800.0, gt=0, description="outside own grids")
    award_share: float = Field(
        default=0.6, gt=0, lt=1, description="share of the vehicles in service awarded"
    )
    flag_share: float = Field(
        default=0.1, ge=0, lt=1, description="share of the vehicles in service flagged"
    )
    in_service: Literal["assigned_and_active", "assigned_or_active", "active", "assigned"] = Field(
        default="assigned_and_active",
        description="which enabled vehicles are ranked: assigned to a village and/or with fixes "
        "on IN_SERVICE_MIN_DAYS days of the window",
    )
    in_service_min_days: int = Field(
        default=1, ge=1, le=366, description="days with fixes (capped at the window's length)"
    )
    rank_weights: dict[str, float] = Field(
        default_factory=lambda: dict(RANK_WEIGHTS),
        description="score weights of own_coverage, km, hours, visits, inside_share (JSON)",
    )
    no_patrol_km: float = Field(
        default=1.0, ge=0, description="this many km or fewer in the window: 无巡逻, never awarded"
    )

    @field_validator("rank_weights")
    @classmethod
    def _known_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(RANK_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown components {unknown}; known: {', '.join(RANK_WEIGHTS)}")
        if any(not 0 <= w < float("inf") for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be finite, ≥ 0, and not all 0")
        return {k: float(value.get(k, 0.0)) for k in RANK_WEIGHTS}


class RetentionSettings(BaseSettings):
    """How long each table keeps its rows (``GRIDPATROL_RETENTION_…``); 0 = forever.

    ``position`` day partitions older than ``POSITION_HOT_DAYS`` are exported to GeoParquet
    under ``ARCHIVE_DIR`` (default ``<api state dir>/archive``) and dropped; track reads fall back
    to the archive. The other tables are only deleted from, by age.
    """

    model_config = _config("GRIDPATROL_RETENTION_")

    position_hot_days: int = Field(default=90, ge=1, description="position days kept in PostGIS")
    archive_dir: Path | None = Field(default=None, description="GeoParquet archive root")
    rejected_days: int = Field(default=30, ge=0, description="position_rejected (quarantine)")
    aggregate_days: int = Field(
        default=1830, ge=0, description="cell_visit, device_day, grid_visit (≈ 5 years)"
    )
    audit_days: int = Field(default=0, ge=0, description="audit_log (0: kept forever)")
    jt808_command_days: int = Field(default=365, ge=0, description="jt808_command log")
    notification_days: int = Field(default=730, ge=0, description="delivered notifications")


class DispatchSettings(BaseSettings):
    """Incidents and nearest-responder dispatch (``GRIDPATROL_DISPATCH_…``)."""

    model_config = _config("GRIDPATROL_DISPATCH_")

    max_age_s: float = Field(default=300.0, gt=0, description="older last fix = stale")
    offline_after_s: float = Field(default=3600.0, gt=0, description="no fix this long = offline")
    speeds_kmh: dict[str, float] = Field(
        default_factory=lambda: {"urban": 30.0, "rural": 50.0},
        description="vehicle speed per terrain class of the incident (JSON)",
    )
    worker_kmh: float = Field(default=25.0, gt=0, description="grid worker speed")
    detour: float = Field(default=1.3, ge=1, description="road ÷ straight distance")
    offroad_kmh: float = Field(default=15.0, gt=0, description="to and from the road network")
    max_eta_s: float = Field(default=7200.0, gt=0, description="slower responders: too_far")
    prefilter: int = Field(default=4, ge=1, le=50, description="KNN short list = k × this")
    max_excluded: int = Field(default=20, ge=0, description="excluded responders listed")
    escalate_after_s: float = Field(default=300.0, gt=0, description="T: no acceptance → widen")
    tick_s: float = Field(default=10.0, gt=0, description="escalation and webhook period")
    arrival_radius_m: float = Field(default=200.0, gt=0, description="a fix this close arrives")
    max_outside_km: float = Field(default=50.0, ge=0, description="beyond every village: 422")
    road_margin_m: float = Field(default=5000.0, ge=0, description="routing box around points")
    road_snap_m: float = Field(default=5000.0, gt=0, description="incident to its road node")
    track_interval_s: int = Field(default=5, ge=1, le=3600, description="808 rate while assigned")
    track_duration_s: int = Field(default=7200, ge=60, description="808 fast-rate window")
    webhook_url: str | None = Field(default=None, description="POST notifications here (JSON)")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1)


class MobileSettings(BaseSettings):
    """The grid worker's phone page ``/m/`` and its API (``GRIDPATROL_MOBILE_…``)."""

    model_config = _config("GRIDPATROL_MOBILE_")

    event_kinds: str = Field(
        default="治安,矛盾纠纷,安全隐患,火情,牲畜走失,其他",
        description="the kinds a worker may report, comma-separated, in the order shown",
    )
    session_hours: float = Field(
        default=72.0, gt=0, le=24 * 30, description="a phone session's life (hours)"
    )
    code_minutes: float = Field(
        default=15.0, gt=0, le=24 * 60, description="a one-time sign-in code's life (minutes)"
    )
    code_max_failures: int = Field(
        default=5, ge=1, le=100, description="wrong codes before the code is void"
    )
    max_photos: int = Field(default=3, ge=0, le=10, description="photos per report")
    photo_max_mb: float = Field(default=2.0, gt=0, le=20, description="one photo's bytes")
    photo_max_pixels: int = Field(
        default=16_000_000, gt=0, description="one photo's width × height (decompression bombs)"
    )
    max_fixes: int = Field(default=500, ge=1, le=5000, description="fixes per request")
    max_outside_km: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="a report's place may lie this far outside the worker's grid (flagged); "
        "further is refused",
    )

    @property
    def kinds(self) -> list[str]:
        """``event_kinds`` as a list (ASCII or Chinese commas, blanks dropped)."""
        return [k.strip() for k in self.event_kinds.replace("，", ",").split(",") if k.strip()]

    @property
    def upload_max_bytes(self) -> int:
        """A report's whole body: its photos and 256 KB for the fields and multipart framing."""
        return int(max(self.max_photos, 1) * self.photo_max_mb * 1024 * 1024) + 256 * 1024


class MapSettings(BaseSettings):
    """Map pages and vector tiles (``GRIDPATROL_MAP_…``); public tiles: ``GRIDPATROL_API_…``."""

    model_config = _config("GRIDPATROL_MAP_")

    basemap: Literal["osm", "tianditu", "amap"] = Field(
        default="osm", description="basemap a page opens with"
    )
    tianditu_key: str | None = Field(default=None, description="天地图 key (tk); none = no 天地图")
    vehicle_refresh_s: float = Field(default=5.0, ge=1, description="live map refresh period")
    vehicle_fresh_s: float = Field(default=300.0, gt=0, description="newer last fix = live")
    vehicle_offline_s: float = Field(default=3600.0, gt=0, description="older last fix = offline")
    stop_minutes: float = Field(default=5.0, gt=0, description="track replay: a stop lasts this")
    stop_radius_m: float = Field(default=50.0, gt=0, description="… within this radius")
    live_poll_s: float = Field(
        default=1.0, ge=0.2, le=60, description="live updates: one shared database poll this often"
    )
    live_max_streams: int = Field(default=200, ge=1, description="live update streams at once")
    live_streams_per_user: int = Field(default=8, ge=1, description="… per user")
    live_queue: int = Field(
        default=256, ge=8, description="events waiting for one client; a slower one is dropped"
    )
    live_stream_max_s: float = Field(
        default=600.0, ge=10, description="a stream ends after this; the page reconnects"
    )


class RolesSettings(BaseSettings):
    """Process roles under ``gridpatrol serve --role all`` / ``gridpatrol run``
    (``GRIDPATROL_ROLES_…``)."""

    model_config = _config("GRIDPATROL_ROLES_")

    ingest_processes: int = Field(
        default=1, ge=1, le=64, description="ingest processes (OsmAnd + JT/T 808, SO_REUSEPORT)"
    )
    worker_processes: int = Field(
        default=1, ge=1, le=64, description="worker processes (coverage, dispatch, layouts)"
    )
    start_timeout_s: float = Field(
        default=120.0, gt=0, description="a role not ready this long after its first start fails"
    )
    restart_backoff_s: float = Field(
        default=1.0, gt=0, description="first wait before a dead role is restarted"
    )
    restart_backoff_max_s: float = Field(
        default=30.0, gt=0, description="the wait doubles per quick death up to this"
    )
    stop_timeout_s: float = Field(
        default=20.0, gt=0, description="after SIGTERM, a role still running is killed"
    )


class DemoSettings(BaseSettings):
    """The living demo of ``gridpatrol run`` / ``make run`` (``GRIDPATROL_DEMO_…``): a simulated
    fleet reporting in real time, and its past week stored once (``api.demofleet``)."""

    model_config = _config("GRIDPATROL_DEMO_")

    vehicles: int = Field(
        default=200, ge=0, le=20_000, description="live demo vehicles, 2 per village; 0 = off"
    )
    area: str = Field(
        default="", max_length=12, pattern=r"^\d*$", description="only villages under this code"
    )
    interval_s: float = Field(default=10.0, ge=1, le=600, description="seconds between fixes")
    shift_hours: float = Field(default=4.0, gt=0, le=24, description="one patrol shift")
    history_days: int = Field(
        default=7, ge=0, le=31, description="past days of shifts stored on first start; 0 = none"
    )
    history_interval_s: float = Field(
        default=30.0, ge=1, le=600, description="seconds between the history's fixes"
    )
    incidents_per_hour: float = Field(
        default=4.0, ge=0, le=3600, description="demo calls at random alarm phones; 0 = none"
    )
    incident_ttl_h: float = Field(
        default=2.0, gt=0, le=168, description="a demo call nobody took is cancelled after this"
    )
    gaps_per_h: float = Field(
        default=0.3, ge=0, le=10, description="2–15 min without signal, per vehicle-hour"
    )
    auto_assign_s: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="the demo's own centre assigns a demo call nobody took after this; 0 = never",
    )
    errand_speed_kmh: float = Field(
        default=60.0, gt=0, le=120, description="how fast a demo vehicle drives to its incident"
    )
    dwell_s: float = Field(
        default=600.0, ge=0, le=86_400, description="time on scene before the demo clears its call"
    )
    seed: int = Field(default=110, description="random seed of the demo tracks")


@dataclass
class Settings:
    """All settings of one process: from the environment, or built with overrides in tests."""

    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    osmand: OsmAndSettings = field(default_factory=OsmAndSettings)
    coverage: CoverageSettings = field(default_factory=CoverageSettings)
    jt808: Jt808Settings = field(default_factory=Jt808Settings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    mobile: MobileSettings = field(default_factory=MobileSettings)
    map: MapSettings = field(default_factory=MapSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    roles: RolesSettings = field(default_factory=RolesSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)


def get_settings() -> Settings:
    """Read settings from the environment now (no module-level singleton)."""
    return Settings()


def archive_root(settings: Settings) -> Path:
    """The archive directory: ``GRIDPATROL_RETENTION_ARCHIVE_DIR`` or ``<state dir>/archive``
    (here, not in ``api.archive``, so that naming it does not load pyarrow into the server)."""
    return settings.retention.archive_dir or settings.api.state_dir / "archive"
