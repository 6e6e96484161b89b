"""The PDF report's table pages, drawn with reportlab: A4 portrait, bilingual headers repeated
on every page, striped rows, verdicts in their colours, page numbers continuing the map and
chart pages (``api.reports.pdf`` puts the two parts together).

matplotlib laid out every cell as a text artist — about 2 ms a cell, 30 s for a league's
village tables; reportlab writes the same pages in well under a second, with the CJK font
embedded (subset) so the text prints and can be searched and copied.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from reportlab.lib.colors import Color, HexColor
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from api.reports import labels
from api.reports.fonts import pdf_font

LEFT, RIGHT = 0.06, 0.94  # shares of the page width, of every page (the map page's too)
ROWS_PER_PAGE = 50
NUMERIC = {"int", "float1", "float3", "pct"}
STRIPE = HexColor("#f2f4f6")
INK = HexColor("#222222")
MUTED = HexColor("#444444")
FAINT = HexColor("#666666")
NOTE = HexColor("#9c5700")
RULE = HexColor("#555555")


@dataclass
class Table:
    """One table to print: its title, rows, columns (with width weights), optional subtitle
    lines above the header of every page, and the most rows to print."""

    title: str
    frame: pd.DataFrame
    columns: Sequence[tuple[labels.Column, float]]
    subtitle: str | None = None
    max_rows: int = 2500


def fit(text: str, width_pt: float, font: str, size: float) -> str:
    """``text`` cut (with …) to fit ``width_pt`` at ``size``."""
    if stringWidth(text, font, size) <= width_pt:
        return text
    while text and stringWidth(text + "…", font, size) > width_pt:
        text = text[:-1]
    return text + "…"


def render_tables(tables: Sequence[Table], footer: str, first_page: int) -> bytes:
    """The tables' pages as PDF bytes; pages numbered from ``first_page``."""
    out = io.BytesIO()
    writer = _Writer(Canvas(out, pagesize=A4, pageCompression=1), pdf_font(), footer, first_page)
    for table in tables:
        writer.table(table)
    writer.canvas.save()
    return out.getvalue()


class _Writer:
    """Pages of tables on one canvas (A4 points; positions as shares of the page)."""

    def __init__(self, canvas: Canvas, font: str, footer: str, page: int) -> None:
        self.canvas, self.font, self.footer, self.page = canvas, font, footer, page
        self.width, self.height = A4

    def text(
        self, x: float, y: float, text: str, size: float, colour: Color, *, right: bool = False
    ) -> None:
        self.canvas.setFont(self.font, size)
        self.canvas.setFillColor(colour)
        if right:
            self.canvas.drawRightString(x, y, text)
        else:
            self.canvas.drawString(x, y, text)

    def cell(
        self,
        x0: float,
        x1: float,
        y: float,
        text: str,
        size: float,
        colour: Color,
        *,
        numeric: bool,
    ) -> None:
        text = fit(text, x1 - x0 - 3, self.font, size)
        if numeric:
            self.text(x1 - 0.004 * self.width, y, text, size, colour, right=True)
        else:
            self.text(x0 + 0.002 * self.width, y, text, size, colour)

    def table(self, table: Table) -> None:
        records = table.frame.head(table.max_rows).to_dict("records")
        scale = (RIGHT - LEFT) * self.width / sum(w for _, w in table.columns)
        edges = [LEFT * self.width]
        for _, w in table.columns:
            edges.append(edges[-1] + w * scale)
        for start in range(0, max(len(records), 1), ROWS_PER_PAGE):
            chunk = records[start : start + ROWS_PER_PAGE]
            y = self.heading(table, start, len(chunk))
            y = self.header(table, edges, y)
            self.rows(table, edges, chunk, y)
            self.end_page()

    def heading(self, table: Table, start: int, count: int) -> float:
        """Title, subtitle lines, the cut-off note; returns where the header goes."""
        total, left, h = len(table.frame), LEFT * self.width, self.height
        span = f"{start + 1}–{start + count} / {total:,}" if total else "0"
        self.text(left, 0.965 * h, f"{table.title}  ({span})", 11, INK)
        y = 0.945 * h
        for line in (table.subtitle or "").splitlines():
            self.text(left, y, line, 6.5, MUTED)
            y -= 0.011 * h
        if table.subtitle:
            y -= 0.004 * h
        if total > table.max_rows and start == 0:
            note = (
                f"仅列前 {table.max_rows:,} 行，完整数据见 XLSX/CSV · first "
                f"{table.max_rows:,} rows; the XLSX and CSV hold all {total:,}"
            )
            self.text(left, y, note, 7, NOTE)
            y -= 0.015 * h
        return y

    def header(self, table: Table, edges: list[float], y: float) -> float:
        """The bilingual column header and its rule; returns the rows' top."""
        for (column, _), x0, x1 in zip(table.columns, edges[:-1], edges[1:], strict=True):
            numeric = column.kind in NUMERIC
            self.cell(x0, x1, y, column.zh, 6.5, INK, numeric=numeric)
            self.cell(x0, x1, y - 0.012 * self.height, column.en, 5.5, MUTED, numeric=numeric)
        y -= 0.02 * self.height
        self.canvas.setFillColor(RULE)
        self.canvas.rect(
            LEFT * self.width, y, (RIGHT - LEFT) * self.width, 0.0008 * self.height, 0, 1
        )
        return y

    def rows(
        self, table: Table, edges: list[float], chunk: list[dict[Hashable, Any]], y: float
    ) -> None:
        step = min(0.0165 * self.height, (y - 0.05 * self.height) / ROWS_PER_PAGE)
        if not chunk:
            self.text(LEFT * self.width, y - step, "无数据 No rows", 8, INK)
        for i, record in enumerate(chunk):
            row_y = y - (i + 1) * step
            if i % 2:
                self.canvas.setFillColor(STRIPE)
                self.canvas.rect(
                    LEFT * self.width, row_y - 0.3 * step, (RIGHT - LEFT) * self.width, step, 0, 1
                )
            for (column, _), x0, x1 in zip(table.columns, edges[:-1], edges[1:], strict=True):
                value = record[column.key]
                colour = (
                    HexColor(labels.VERDICT_COLOUR.get(str(value), "#222222"))
                    if column.kind == "verdict"
                    else INK
                )
                text = labels.cell_text(value, column.kind)
                self.cell(x0, x1, row_y, text, 6.3, colour, numeric=column.kind in NUMERIC)

    def end_page(self) -> None:
        self.text(LEFT * self.width, 0.02 * self.height, self.footer, 6.5, FAINT)
        page = f"第 {self.page} 页 page {self.page}"
        self.text(RIGHT * self.width, 0.02 * self.height, page, 6.5, INK, right=True)
        self.canvas.showPage()
        self.page += 1
