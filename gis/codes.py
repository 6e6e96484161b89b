"""NBS statistical division codes (统计用区划代码) and grid codes.

A 12-digit NBS code is 2 province + 2 prefecture/league + 2 county + 3 township + 3 village digits
(``152502100201``). Codes nest by prefix, so the *significant prefix* of a code (its digits up to
its own level) is what scoping and parent lookups use: ``152502`` for the county 152502000000.
A grid code is the village's 12 digits + a 3-digit sequence (``152502100201007``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LEVEL_DIGITS: dict[str, int] = {
    "province": 2,
    "league": 4,
    "county": 6,
    "township": 9,
    "village": 12,
    "grid": 15,
}
ADMIN_LEVEL_ORDER = ("province", "league", "county", "township", "village")
_DIGITS = re.compile(r"^[0-9]+$")


class CodeError(ValueError):
    """A code that does not follow the NBS / grid code structure."""


@dataclass(frozen=True)
class NbsCode:
    """A parsed NBS code: the 12-digit form, its level and its significant prefix."""

    code: str
    level: str
    prefix: str

    @property
    def parent(self) -> str | None:
        """12-digit code of the enclosing area, ``None`` for a province."""
        idx = ADMIN_LEVEL_ORDER.index(self.level)
        if idx == 0:
            return None
        keep = LEVEL_DIGITS[ADMIN_LEVEL_ORDER[idx - 1]]
        return self.code[:keep].ljust(12, "0")


def _level_of_12(code: str) -> str:
    if code[9:12] != "000":
        return "village"
    if code[6:9] != "000":
        return "township"
    if code[4:6] != "00":
        return "county"
    if code[2:4] != "00":
        return "league"
    return "province"


def parse_nbs(code: str) -> NbsCode:
    """Parse a 12-digit NBS code, or a significant prefix of 2/4/6/9 digits.

    Raises
    ------
    CodeError
        When the code is not digits, has another length, starts with ``00``, or a segment is
        zero while a later one is not (``152500100000`` names a township in no county).
    """
    code = str(code).strip()
    if not _DIGITS.match(code):
        raise CodeError(f"NBS code {code!r} must contain digits only")
    if len(code) in (2, 4, 6, 9):
        code = code.ljust(12, "0")
    if len(code) != 12:
        raise CodeError(f"NBS code {code!r} must have 12 digits (2+2+2+3+3), got {len(code)}")
    if code[:2] == "00":
        raise CodeError(f"NBS code {code!r} has no province")
    level = _level_of_12(code)
    prefix = code[: LEVEL_DIGITS[level]]
    segments = [(0, 2), (2, 4), (4, 6), (6, 9), (9, 12)]
    seen_zero = False
    for start, end in segments:
        zero = set(code[start:end]) == {"0"}
        if seen_zero and not zero:
            raise CodeError(
                f"NBS code {code!r} skips a level: digits {start + 1}-{end} are set "
                "while an enclosing level is zero"
            )
        seen_zero = seen_zero or zero
    return NbsCode(code=code, level=level, prefix=prefix)


def level_of(code: str) -> str:
    """Admin level (``province`` … ``village``) of an NBS code, or ``grid`` for a grid code."""
    if len(code) == LEVEL_DIGITS["grid"]:
        parse_grid_code(code)
        return "grid"
    return parse_nbs(code).level


def scope_prefix(code: str) -> str:
    """Significant prefix of an admin code, or the full code of a grid (15 digits).

    ``'*'`` (everything) is returned unchanged.
    """
    code = str(code).strip()
    if code == "*":
        return code
    if len(code) == LEVEL_DIGITS["grid"]:
        parse_grid_code(code)
        return code
    return parse_nbs(code).prefix


@dataclass(frozen=True)
class GridCode:
    village: str
    sequence: int

    def __str__(self) -> str:
        return f"{self.village}{self.sequence:03d}"


def grid_code(village_code: str, sequence: int) -> str:
    """The grid code for ``sequence`` (1–999) in a village."""
    village = parse_nbs(village_code)
    if village.level != "village":
        raise CodeError(
            f"grid codes hang off a village code, {village_code!r} is a {village.level}"
        )
    if not 1 <= sequence <= 999:
        raise CodeError(f"grid sequence must be 1–999, got {sequence}")
    return f"{village.code}{sequence:03d}"


def parse_grid_code(code: str) -> GridCode:
    """Split a 15-digit grid code into its village code and sequence."""
    code = str(code).strip()
    if len(code) != 15 or not _DIGITS.match(code):
        raise CodeError(f"grid code {code!r} must be 15 digits (village 12 + sequence 3)")
    village = parse_nbs(code[:12])
    if village.level != "village":
        raise CodeError(f"grid code {code!r} does not start with a village code")
    seq = int(code[12:])
    if seq == 0:
        raise CodeError(f"grid code {code!r} has sequence 000")
    return GridCode(village=village.code, sequence=seq)
