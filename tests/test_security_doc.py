"""SECURITY.md names a test for every control and a file for every place: each named file,
folder and test must exist, so the page cannot drift from the code it describes."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "SECURITY.md"
CODE = re.compile(r"`([^`]+)`")
TEST_FILE = re.compile(r"^(?:tests/[\w/]+/)?(test_\w+\.py)$")
SOURCE = re.compile(r"^(?:api|gis|tiles|bench|tools|tests)/[\w/.*-]*$")


def _tests_in(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))


def _find_test_file(name: str) -> Path:
    found = sorted((ROOT / "tests").rglob(name))
    assert found, f"SECURITY.md names {name}, which is not under tests/"
    return found[0]


def _references() -> list[tuple[int, str, str | None]]:
    """(line, file, test or None) for every test reference; a bare ``::test`` refers to the
    last file named before it on the same line."""
    refs: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(DOC.read_text().splitlines(), 1):
        last: str | None = None
        for token in CODE.findall(line):
            head, sep, test = token.partition("::")
            if head and TEST_FILE.match(head):
                last = head
            if sep and last is not None:
                refs.append((number, last, test.split("[")[0]))
            elif head and TEST_FILE.match(head):
                refs.append((number, head, None))
    return refs


def test_every_named_test_exists() -> None:
    refs = _references()
    assert len(refs) > 40, "the page should name its tests"
    for number, name, test in refs:
        path = ROOT / name if "/" in name else _find_test_file(name)
        assert path.is_file(), f"SECURITY.md:{number}: no file {name}"
        if test:
            names = _tests_in(path)
            assert fnmatch.filter(names, test), f"SECURITY.md:{number}: no {test} in {name}"


def test_every_named_place_exists() -> None:
    checked = 0
    for number, line in enumerate(DOC.read_text().splitlines(), 1):
        for token in CODE.findall(line):
            path = token.split(" ")[0].split("::")[0].rstrip(",")
            if not SOURCE.match(path) or TEST_FILE.match(path):
                continue
            checked += 1
            assert list(ROOT.glob(path.rstrip("/"))), f"SECURITY.md:{number}: nothing at {path}"
    assert checked > 20
