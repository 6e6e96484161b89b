"""Data scope (数据权限): what part of the map a user may see and change.

One mechanism for every route: a ``Scope`` is resolved once per request from the token, and every
query adds ``scope.where(...)`` — a SQL predicate on the admin-area code prefix (NBS codes nest by
prefix) or on grid codes. Reads outside the scope match no rows, so routes answer 404 as if the
object did not exist; writes outside it are refused with 403 via ``scope.require(...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from api.errors import Forbidden
from gis.codes import CodeError, parse_grid_code, scope_prefix

ALL = "*"


@dataclass(frozen=True)
class Scope:
    """Admin-area prefixes and grid codes a principal may access; ``ALL`` in areas = everything."""

    areas: tuple[str, ...] = ()
    grids: tuple[str, ...] = ()

    @classmethod
    def everything(cls) -> Scope:
        return cls(areas=(ALL,))

    @classmethod
    def parse(cls, codes: Iterable[str]) -> Scope:
        """Build from user-facing codes (``152502``, ``152502000000``, a grid code, or ``*``).

        Raises
        ------
        ValueError
            For a code that is neither an NBS admin code nor a grid code.
        """
        areas: list[str] = []
        grids: list[str] = []
        for raw in codes:
            code = str(raw).strip()
            if not code:
                continue
            try:
                prefix = scope_prefix(code)
            except CodeError as exc:
                raise ValueError(f"invalid scope code {code!r}: {exc}") from exc
            (grids if len(prefix) == 15 else areas).append(prefix)
        if ALL in areas:
            return cls.everything()
        return cls(areas=tuple(sorted(set(areas))), grids=tuple(sorted(set(grids))))

    @property
    def unrestricted(self) -> bool:
        return ALL in self.areas

    @property
    def codes(self) -> list[str]:
        """The scope as stored (users.scope / audit_log.user_scope)."""
        return [*self.areas, *self.grids]

    def narrow(self, other: Scope | None) -> Scope:
        """Intersection with a token's own scope (a token can only narrow its user's scope)."""
        if other is None or other.unrestricted:
            return self
        if self.unrestricted:
            return other
        areas = {a for a in other.areas if self.covers_area(a)}
        areas |= {a for a in self.areas if other.covers_area(a)}
        grids = {g for g in other.grids if self.covers_grid(g)}
        grids |= {g for g in self.grids if other.covers_grid(g)}
        return Scope(areas=tuple(sorted(areas)), grids=tuple(sorted(grids)))

    def contains(self, other: Scope) -> bool:
        """True when everything ``other`` reaches lies inside this scope."""
        if self.unrestricted:
            return True
        if other.unrestricted:
            return False
        return all(self.covers_area(a) for a in other.areas) and all(
            self.covers_grid(g) for g in other.grids
        )

    # ---- Python-side checks ------------------------------------------------------------------
    def covers_area(self, code: str) -> bool:
        """True when the admin area ``code`` (any length) lies inside an area of the scope."""
        if self.unrestricted:
            return True
        return any(code.startswith(prefix) for prefix in self.areas)

    def covers_grid(self, code: str) -> bool:
        return self.covers_area(code) or code in self.grids

    def sees_area(self, code: str) -> bool:
        """Like ``covers_area``, plus the ancestors and the village of the scope's grids,
        which a grid worker must see to read their grid on the map."""
        if self.covers_area(code):
            return True
        return any(code == parse_grid_code(g).village for g in self.grids)

    def require_area(self, code: str | None, what: str = "this area") -> None:
        """Refuse a write that touches an area outside the scope (403)."""
        if code is None and self.unrestricted:
            return
        if code is None or not self.covers_area(code):
            raise Forbidden(f"{what} ({code or 'no area'}) is outside your scope")

    def require_grid(self, code: str, what: str = "this grid") -> None:
        if not self.covers_grid(code):
            raise Forbidden(f"{what} ({code}) is outside your scope")

    # ---- SQL ---------------------------------------------------------------------------------
    def where(
        self,
        area: str | sql.Composable,
        grid: str | sql.Composable | None = None,
        *,
        with_grid_villages: bool = False,
    ) -> sql.Composable:
        """A predicate limiting rows to the scope.

        Parameters
        ----------
        area
            Column (or expression) holding the row's admin-area code (any level, or a grid code:
            prefixes match both).
        grid
            Optional column holding the row's grid code.
        with_grid_villages
            Also admit the villages holding the scope's grids (for admin-area listings).

        The predicate uses the named parameters of ``params()``; pass them with the query.
        """
        if self.unrestricted:
            return sql.SQL("TRUE")
        area_sql = sql.Identifier(*area.split(".")) if isinstance(area, str) else area
        parts: list[sql.Composable] = [
            sql.SQL("{} LIKE ANY(%(scope_area_patterns)s::text[])").format(area_sql)
        ]
        if grid is not None:
            grid_sql = sql.Identifier(*grid.split(".")) if isinstance(grid, str) else grid
            parts.append(sql.SQL("{} = ANY(%(scope_grids)s::text[])").format(grid_sql))
        if with_grid_villages:
            parts.append(sql.SQL("{} = ANY(%(scope_grid_villages)s::text[])").format(area_sql))
        return sql.SQL("({})").format(sql.SQL(" OR ").join(parts))

    def params(self) -> dict[str, Any]:
        return {
            "scope_areas": list(self.areas),
            "scope_area_patterns": [f"{a}%" for a in self.areas],
            "scope_grids": list(self.grids),
            "scope_grid_villages": sorted({parse_grid_code(g).village for g in self.grids}),
        }
