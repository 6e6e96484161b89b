"""Coverage marks are claimed in a short transaction: ingest never waits on a recompute, fixes
that arrive during one are recomputed again, a dead worker's claims are taken again after the
stale limit, and a failed step gives its claims back at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pytest

from api.coverage.update import CoverageUpdater
from api.settings import CoverageSettings
from gis.coverage import local_day
from tests.api.test_coverage_update import _batch, _fleet, _ids, _remark, _store, _update
from tests.conftest import run

INGEST_GIVE_UP_S = 60.0  # a deadlock guard: the old design made this ingest wait forever here


@dataclass
class PausedUpdater(CoverageUpdater):
    """Stops inside its recompute transaction (after the claim) until ``go`` is set."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def _recompute(self, conn: Any, day: int, devices: list[int], indexes: Any) -> Any:
        self.entered.set()
        await self.go.wait()
        return await super()._recompute(conn, day, devices, indexes)


@dataclass
class FailingUpdater(CoverageUpdater):
    async def _recompute(self, conn: Any, day: int, devices: list[int], indexes: Any) -> Any:
        await super()._recompute(conn, day, devices, indexes)
        raise RuntimeError("the worker fell over mid-step")


def _marks(db: psycopg.Connection[Any], ids: list[int]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT device_id, day, claimed_at IS NOT NULL, remarked FROM coverage_dirty "
        "WHERE device_id = ANY(%s) ORDER BY device_id, day",
        (ids,),
    ).fetchall()


def _fixes_counted(db: psycopg.Connection[Any], ids: list[int]) -> int:
    row = db.execute(
        "SELECT coalesce(sum(fixes), 0) FROM device_day WHERE device_id = ANY(%s)", (ids,)
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.usefixtures("demo")
def test_ingest_does_not_wait_for_a_recompute_and_its_fixes_count(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    idents, tracks = _fleet(db_url, 1, seed=31)
    half = len(tracks) // 2
    run(_store(db_url, _batch(idents, tracks, np.arange(half))))
    run(_update(db_url))  # nothing else pending; then mark this device's days again
    ids = _ids(db, idents)
    _remark(db, ids)
    days_before = len(_marks(db, ids))
    assert days_before >= 1

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        paused = PausedUpdater(CoverageSettings())
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            step = asyncio.create_task(paused.step(conn))
            await asyncio.wait_for(paused.entered.wait(), INGEST_GIVE_UP_S)
            claimed = _marks(db, ids)
            late = _batch(idents, tracks, np.arange(half, len(tracks)))
            try:
                await asyncio.wait_for(_store(db_url, late), INGEST_GIVE_UP_S)
            finally:
                paused.go.set()
            during = _marks(db, ids)
            await step
            return claimed, during, _marks(db, ids)

    claimed, during, after = run(scenario())
    assert claimed
    assert all(c[2] for c in claimed)  # claimed, and committed before the recompute began
    assert any(m[2] and m[3] for m in during)  # the late fixes remarked a claimed day
    assert after
    assert all(not m[2] and not m[3] for m in after)  # kept, free for the next step
    run(_update(db_url))
    assert _marks(db, ids) == []
    stored = db.execute(
        "SELECT count(*) FROM position WHERE device_id = ANY(%s)", (ids,)
    ).fetchone()
    assert stored is not None
    days = {int(d) for d in local_day(tracks.time_us)}
    assert len(days) == 2
    assert _fixes_counted(db, ids) == stored[0] == len(tracks)  # every late fix is in coverage


@pytest.mark.usefixtures("demo")
def test_a_stale_claim_is_taken_again_and_a_fresh_one_is_left(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    idents, tracks = _fleet(db_url, 2, seed=37)
    run(_store(db_url, _batch(idents, tracks)))
    ids = _ids(db, idents)
    run(_update(db_url))
    db.execute("DELETE FROM device_day WHERE device_id = ANY(%s)", (ids,))
    db.execute(
        "INSERT INTO coverage_dirty (device_id, day, claimed_at) "
        "SELECT id, day, now() - CASE WHEN id = %s THEN interval '2 hours' ELSE interval '0' END "
        "FROM unnest(%s::int[]) AS id, unnest(%s::date[]) AS day",
        (
            ids[0],
            ids,
            [str(np.datetime64(int(d), "D")) for d in sorted(set(local_day(tracks.time_us)))],
        ),
    )
    run(_update(db_url))
    left = _marks(db, ids)
    assert {m[0] for m in left} == {ids[1]}  # the live worker's claim is not touched
    assert all(m[2] for m in left)
    counted = db.execute(
        "SELECT device_id, sum(fixes) FROM device_day WHERE device_id = ANY(%s) GROUP BY 1",
        (ids,),
    ).fetchall()
    assert [c[0] for c in counted] == [ids[0]]  # the dead worker's day was recomputed
    db.execute("DELETE FROM coverage_dirty WHERE device_id = ANY(%s)", (ids,))


@pytest.mark.usefixtures("demo")
def test_a_failed_step_gives_its_claims_back(db_url: str, db: psycopg.Connection[Any]) -> None:
    idents, tracks = _fleet(db_url, 1, seed=41)
    run(_update(db_url))
    run(_store(db_url, _batch(idents, tracks)))
    ids = _ids(db, idents)
    before = _marks(db, ids)

    async def fail() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await FailingUpdater(CoverageSettings()).step(conn)

    with pytest.raises(RuntimeError, match="fell over"):
        run(fail())
    assert _marks(db, ids) == before  # unclaimed, not remarked, all still there
    assert _fixes_counted(db, ids) == 0  # nothing of the failed step was kept
    run(_update(db_url))
    assert _marks(db, ids) == []
    assert _fixes_counted(db, ids) == len(tracks)


@pytest.mark.usefixtures("demo")
def test_a_run_does_its_backlog_and_leaves_what_arrives_meanwhile(
    db_url: str, db: psycopg.Connection[Any]
) -> None:
    idents, tracks = _fleet(db_url, 2, seed=43)
    run(_update(db_url))
    first = tracks.vehicle == 0
    run(_store(db_url, _batch(idents, tracks, np.flatnonzero(first))))
    ids = _ids(db, idents)
    backlog = len(_marks(db, ids))
    late = _batch(idents, tracks, np.flatnonzero(~first))

    @dataclass
    class Busy(CoverageUpdater):
        """The second vehicle reports while the first step runs."""

        late_marks: int = 0

        async def _recompute(self, conn: Any, day: int, devices: list[int], indexes: Any) -> Any:
            if not self.late_marks:
                await _store(db_url, late)
                self.late_marks = len(_marks(db, ids[1:]))
            return await super()._recompute(conn, day, devices, indexes)

    busy = Busy(CoverageSettings(batch_device_days=1))

    async def busy_run() -> int:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return (await busy.run(conn)).device_days

    assert run(busy_run()) == backlog  # one device-day per step, as many steps as the backlog
    assert busy.late_marks > 0
    assert len(_marks(db, ids)) == busy.late_marks  # as many left as came in meanwhile
    run(_update(db_url))
    assert _marks(db, ids) == []
    assert _fixes_counted(db, ids) == len(tracks)
