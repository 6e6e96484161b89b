"""One definition of coverage classes and blind-spot style for the map pages and every report."""

from __future__ import annotations

import itertools
from html import escape
from types import SimpleNamespace

import numpy as np

from gis import palette


def test_classes_are_contiguous_and_cover_0_to_100() -> None:
    classes = palette.COVERAGE_CLASSES
    assert classes[0].lower == 0.0
    assert classes[-1].upper > 100.0
    for below, above in itertools.pairwise(classes):
        assert below.upper == above.lower
    assert len({k.colour for k in classes}) == len(classes)


def test_a_percentage_falls_in_the_class_whose_bounds_hold_it() -> None:
    pct = [0.0, 0.004, 0.01, 24.99, 25.0, 74.9, 75.0, 89.99, 90.0, 100.0, np.nan, -1.0]
    expected = [0, 0, 1, 1, 2, 3, 4, 4, 5, 5, 0, 0]
    assert palette.coverage_classes(pct).tolist() == expected
    assert [palette.coverage_class(None if np.isnan(p) else p) for p in pct] == expected
    for i, klass in enumerate(palette.COVERAGE_CLASSES):
        assert palette.coverage_class(klass.lower) == i


def test_map_page_and_report_legends_use_the_same_classes_and_blind_mark() -> None:
    from api.reports import html as report_html
    from gis.maps_common import coverage_legend

    page = coverage_legend(7)
    for klass in palette.COVERAGE_CLASSES:
        assert klass.colour in page
        assert klass.label in page
    assert palette.BLIND_SWATCH_CSS in page
    assert palette.blind_label(7) in page
    report = report_html.legend_html(
        SimpleNamespace(blind=SimpleNamespace(days=7), synthetic=False)
    )
    for klass in palette.COVERAGE_CLASSES:
        assert klass.colour in report
        assert escape(klass.label) in report
    assert palette.BLIND_SWATCH_CSS in report
    assert palette.blind_label(7) in report
