"""The CSV report: the chosen level's table, UTF-8 with a byte-order mark so Excel shows the
Chinese names correctly, one bilingual header row (``覆盖率% Coverage %``)."""

from __future__ import annotations

import csv
import io

from api.reports import labels
from api.reports.data import ReportData

BOM = "\ufeff"
# a field starting with one of these is a formula to Excel/LibreOffice (OWASP CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def render_csv(data: ReportData) -> bytes:
    """The chosen level's units as CSV bytes (UTF-8 with BOM, CRLF line ends as RFC 4180)."""
    columns = labels.UNIT_COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralise(c.label) for c in columns])
    for record in data.units.to_dict("records"):
        writer.writerow([_value(record[c.key], c.kind) for c in columns])
    return (BOM + out.getvalue()).encode("utf-8")


def _value(value: object, kind: str) -> str:
    """Plain machine-readable values: numbers unformatted, empty for missing, ISO times."""
    text = labels.cell_text(value, kind)
    if text == "—":
        return ""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "int":
        return str(int(value))  # type: ignore[call-overload]
    if kind in ("float1", "float3", "pct"):
        return repr(round(float(value), 4))  # type: ignore[arg-type]
    return neutralise(text)


def neutralise(text: str) -> str:
    """A text field as text: one a spreadsheet would run as a formula (``=1+1``,
    ``=HYPERLINK(…)``, ``@SUM(…)``, ``+``/``-`` …) gets a leading single quote."""
    return "'" + text if text.startswith(FORMULA_START) else text
