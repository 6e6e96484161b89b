"""One entry point for every format: ``render(data, fmt)`` → bytes, media type, file name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from api.reports.csvfile import render_csv
from api.reports.data import ReportData
from api.reports.html import render_html
from api.reports.pdf import render_pdf
from api.reports.xlsx import render_xlsx

MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
    "csv": "text/csv; charset=utf-8",
}
FORMATS = tuple(MEDIA_TYPES)


@dataclass(frozen=True)
class Rendered:
    content: bytes
    media_type: str
    filename: str
    note: str | None = None  # the data's note (empty window, pending updates), ASCII

    @property
    def disposition(self) -> str:
        """``Content-Disposition``: HTML opens in the browser, the rest download."""
        kind = "inline" if self.media_type.startswith("text/html") else "attachment"
        return f'{kind}; filename="{self.filename}"'


def _html(data: ReportData) -> bytes:
    return render_html(data).encode("utf-8")


RENDERERS: dict[str, Callable[[ReportData], bytes]] = {
    "html": _html,
    "xlsx": render_xlsx,
    "pdf": render_pdf,
    "csv": render_csv,
}


def filename(data: ReportData, fmt: str) -> str:
    """``gridpatrol-coverage-village-2026-11-01-2026-11-07.pdf`` (ASCII, no spaces)."""
    w = data.window
    return f"gridpatrol-coverage-{data.level}-{w.first.isoformat()}-{w.last.isoformat()}.{fmt}"


def render(data: ReportData, fmt: str) -> Rendered:
    """Render a report.

    Raises
    ------
    ValueError
        For a format other than html, xlsx, pdf, csv.
    NoCjkFont
        For html and pdf (charts) when no CJK font is installed.
    """
    if fmt not in RENDERERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    return Rendered(RENDERERS[fmt](data), MEDIA_TYPES[fmt], filename(data, fmt), data.note)
