"""Shared benchmark helpers: result files, timing, percentiles, a throwaway database."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from api.db import migrate
from api.db.cluster import EmbeddedCluster, free_port

RESULTS = Path(__file__).parent / "results"


def commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    )
    return out.stdout.strip() or "unknown"


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with commit and date added; print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": name,
        **figures,
        "commit": commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return path


def best_of(func: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Fastest wall time of ``repeat`` runs (the machine is shared: the minimum is the signal)."""
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def percentiles_ms(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
    }


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A migrated PostGIS database in a temporary cluster, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="gridpatrol-bench-"))
    base.chmod(0o755)
    cluster = EmbeddedCluster(base / "pg", port=free_port(), dbname="bench")
    try:
        cluster.start()
        migrate.upgrade(cluster.url)
        yield cluster.url
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
