"""Shared constants and helpers of the protocol parser tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from api.ingest.fixes import FixBatch, to_time_us
from api.protocols.trackfiles import ParseResult

DATA = Path(__file__).parent / "data"
CAPMETRO = Path(__file__).parents[3] / "data/tracks/capmetro_austin_bus_positions_20150308.csv"
T0 = to_time_us(dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC))
SECOND = 1_000_000
KNOT = 1852 / 3600


def extras(batch: FixBatch, i: int) -> dict[str, object]:
    return orjson.loads(batch.extras[i]) if batch.extras[i] else {}


def errors_by_row(result: ParseResult) -> dict[int, tuple[str | None, str]]:
    return {e.row: (e.field, e.reason) for e in result.errors}
