"""A CJK font for matplotlib (charts, the PDF): Chinese names and labels need one.

Debian's ``fonts-wqy-microhei`` is the one we install (``tools/ensure-system.sh``); other common
CJK fonts are accepted when present. Without any, reports fail with a message naming the
package rather than printing boxes (豆腐) where the names should be.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import matplotlib as mpl
from matplotlib import font_manager

from api.errors import Unavailable

CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
)
KNOWN_FAMILIES = ("WenQuanYi", "Noto Sans CJK", "Source Han Sans", "Microsoft YaHei", "SimHei")
INSTALL_HINT = (
    "no CJK font found for Chinese text in charts and PDFs; install one with "
    "'apt-get install -y fonts-wqy-microhei' (tools/ensure-system.sh does it)"
)


class NoCjkFont(Unavailable):
    """No font that can draw Chinese is installed (HTTP 503 in the API)."""

    code = "no_cjk_font"


@cache
def cjk_family() -> str:
    """The family name of an installed CJK font, registered with matplotlib.

    Raises
    ------
    NoCjkFont
        When none of ``CANDIDATES`` exists and matplotlib knows no CJK family.
    """
    for path in CANDIDATES:
        if path.exists():
            font_manager.fontManager.addfont(str(path))
            return str(font_manager.FontProperties(fname=str(path)).get_name())
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith(KNOWN_FAMILIES):
            return str(entry.name)
    raise NoCjkFont(INSTALL_HINT)


@contextmanager
def cjk_style() -> Iterator[str]:
    """matplotlib settings for our figures: the CJK font first (DejaVu for the rest),
    glyphs as paths in SVG so pages need no font, a real minus sign avoided (the CJK font
    lacks it). Yields the family name."""
    family = cjk_family()
    with mpl.rc_context(
        {
            "font.family": [family, "DejaVu Sans"],
            "svg.fonttype": "path",
            "axes.unicode_minus": False,
            "pdf.compression": 6,
        }
    ):
        yield family


PDF_FONT = "GridPatrolCJK"


@cache
def pdf_font() -> str:
    """The CJK font registered with reportlab (the PDF's tables), by the name it goes by.

    Raises
    ------
    NoCjkFont
        When no TrueType CJK font is installed (reportlab embeds TrueType outlines only).
    """
    from reportlab.pdfbase import pdfmetrics  # noqa: PLC0415 - only the PDF needs it
    from reportlab.pdfbase.ttfonts import TTFError, TTFont  # noqa: PLC0415

    paths = [p for p in CANDIDATES if p.exists()] + [
        Path(e.fname) for e in font_manager.fontManager.ttflist if e.name.startswith(KNOWN_FAMILIES)
    ]
    for path in paths:
        try:
            pdfmetrics.registerFont(TTFont(PDF_FONT, str(path), subfontIndex=0))
        except (TTFError, OSError):
            continue
        return PDF_FONT
    raise NoCjkFont(INSTALL_HINT)
