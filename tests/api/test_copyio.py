"""Binary COPY readers against PostgreSQL: the grouped read gives the plain read's values, and
what it cannot represent (NULLs, ragged arrays) is refused by name, not misread."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from psycopg import sql

from api.db.copyio import read_grouped, read_rows
from tests.conftest import run

ROWS = sql.SQL(
    "SELECT g % 7 AS k, g::bigint * 1000003 AS v, (g / 3.0)::float8 AS x, "
    "timestamptz '2026-01-01' + g * interval '1 second' AS t FROM generate_series(1, 5000) g"
)


async def _read(url: str, query: sql.Composable) -> tuple[np.ndarray, np.ndarray]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        plain = await read_rows(
            conn, ROWS, [("k", "int4"), ("v", "int8"), ("x", "float8"), ("t", "timestamptz")]
        )
        grouped = await read_grouped(
            conn, query, [("k", "int4")], [("v", "int8"), ("x", "float8"), ("t", "timestamptz")]
        )
    return plain, grouped


def test_grouped_read_equals_the_plain_read(db_url: str) -> None:
    query = sql.SQL(
        "SELECT k, array_agg(v), array_agg(x), array_agg(t) FROM ({}) r GROUP BY k"
    ).format(ROWS)
    plain, grouped = run(_read(db_url, query))
    assert len(grouped) == len(plain) == 5000
    order_p = np.lexsort((plain["v"], plain["k"]))
    order_g = np.lexsort((grouped["v"], grouped["k"]))
    for name in ("k", "v", "x", "t"):
        assert np.array_equal(plain[name][order_p], grouped[name][order_g]), name
    empty = sql.SQL("SELECT k, array_agg(v), array_agg(x), array_agg(t) FROM ({}) r "
                    "WHERE false GROUP BY k").format(ROWS)  # fmt: skip
    assert len(run(_read(db_url, empty))[1]) == 0


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "SELECT 1, ARRAY[1::bigint, NULL], ARRAY[1.0::float8, 2.0], ARRAY[now(), now()]",
            "without NULLs",
        ),
        (
            "SELECT 1, ARRAY[1::bigint, 2], ARRAY[1.0::float8], ARRAY[now(), now()]",
            "has 1 values, not 2",
        ),
        ("SELECT NULL::int, ARRAY[1::bigint], ARRAY[1.0::float8], ARRAY[now()]", "NULL key"),
        ("SELECT 1, NULL::bigint[], ARRAY[1.0::float8], ARRAY[now()]", "NULL array v"),
        ("SELECT 1, ARRAY[1::bigint]", "expected 4 columns, got 2"),
    ],
)
def test_grouped_read_refuses_what_it_cannot_represent(
    db_url: str, query: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run(_read(db_url, sql.SQL(query)))  # type: ignore[arg-type]
