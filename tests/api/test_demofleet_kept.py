"""The living demo's side tasks (its calls, its errands) survive their own failures: a task
that raises is logged and started again after a growing pause; one that returns is done."""

from __future__ import annotations

import asyncio
import logging

import pytest

from api.demofleet import kept_running


def test_a_failing_side_task_is_started_again_until_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts: list[int] = []

    async def flaky() -> None:
        starts.append(1)
        if len(starts) < 4:
            raise RuntimeError(f"database went away ({len(starts)})")

    async def go() -> None:
        await asyncio.wait_for(
            kept_running("demo calls", flaky, first_pause_s=0.01, most_pause_s=0.04), 5
        )

    with caplog.at_level(logging.ERROR, logger="gridpatrol.demofleet"):
        asyncio.run(go())
    assert len(starts) == 4
    failures = [r.getMessage() for r in caplog.records if "demo calls failed" in r.getMessage()]
    # the pause doubles up to its ceiling
    assert [m.rsplit(" in ", 1)[1] for m in failures] == ["0.01 s", "0.02 s", "0.04 s"]
    assert "database went away (1)" in caplog.text  # with the reason (the traceback)


def test_a_cancelled_side_task_stops() -> None:
    async def forever() -> None:
        await asyncio.sleep(3600)

    async def go() -> None:
        task = asyncio.create_task(kept_running("demo errands", forever, first_pause_s=0.01))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
