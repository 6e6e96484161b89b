"""The caller's scope as tiles see it: a SQL predicate and its parameters, nothing more.

``tiles/`` is SQL and tile maths only and imports nothing of the API; the API's
``api.scope.Scope`` satisfies this protocol and is what every route passes in.
"""

from __future__ import annotations

from typing import Any, Protocol

from psycopg import sql


class ScopeSql(Protocol):
    """What a layer or collection statement needs of a scope."""

    @property
    def unrestricted(self) -> bool:
        """True when the scope is everything (its predicate is ``TRUE``)."""
        ...

    def where(
        self,
        area: str | sql.Composable,
        grid: str | sql.Composable | None = None,
        *,
        with_grid_villages: bool = False,
    ) -> sql.Composable:
        """A predicate limiting rows to the scope (named parameters: ``params()``)."""
        ...

    def params(self) -> dict[str, Any]:
        """The predicate's parameters."""
        ...
