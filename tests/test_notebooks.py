"""Every notebook in ``notebooks/`` runs top to bottom against the test database, with patrol
data in the window it reads, and is committed without outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.api.test_reports import store_patrols

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_the_coverage_walk_through_is_there() -> None:
    assert ROOT / "notebooks" / "coverage.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(
    path: Path, demo: str, make_device: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    patrols = store_patrols(demo, make_device)
    # the kernel inherits this process's environment: the database and the window with data
    monkeypatch.setenv("DATABASE_URL", demo)
    monkeypatch.setenv("NOTEBOOK_FROM", patrols.day.isoformat())
    monkeypatch.setenv("NOTEBOOK_TO", patrols.day.isoformat())
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    printed = "".join(
        o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    assert f"window {patrols.day} – {patrols.day} (1 d)" in printed
    assert "data present" in printed  # the window has patrols, not the empty-window note
