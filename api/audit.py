"""The audit log: who did what, when, and under which scope."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.auth import Principal


async def record(
    conn: AsyncConnection[Any],
    principal: Principal,
    action: str,
    *,
    object_type: str | None = None,
    object_id: str | int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry in the caller's transaction, so it commits or rolls back with it."""
    await conn.execute(
        """
        INSERT INTO audit_log (user_id, user_name, user_scope, action, object_type, object_id,
                               detail)
        VALUES (%(user_id)s, %(user_name)s, %(user_scope)s, %(action)s, %(object_type)s,
                %(object_id)s, %(detail)s)
        """,
        {
            **principal.audit_fields(),
            "action": action,
            "object_type": object_type,
            "object_id": None if object_id is None else str(object_id),
            "detail": Jsonb(detail) if detail is not None else None,
        },
    )
