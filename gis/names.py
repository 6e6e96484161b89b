"""Romanised (pinyin) names for admin areas, with the area kind translated.

``锡林浩特市`` → ``Xilinhaote City``, ``阿巴嘎旗`` → ``Abaga Banner``, ``额尔敦高毕嘎查`` →
``Erdungaobi Gacha``. Mongolian names are given in the pinyin of their Chinese form, as signs and
statistical lists do.
"""

from __future__ import annotations

from pypinyin import lazy_pinyin

# longest suffix first
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("社区居委会", "Community"),
    ("居民委员会", "Community"),
    ("社区建设管理局", "Community Administration"),
    ("管理区管委会", "Administrative Zone"),
    ("管理区", "Administrative Zone"),
    ("居委会", "Community"),
    ("村委会", "Village"),
    ("街道办事处", "Subdistrict"),
    ("街道", "Subdistrict"),
    ("社区", "Community"),
    ("苏木", "Sumu"),
    ("嘎查", "Gacha"),
    ("牧场", "Ranch"),
    ("农场", "Farm"),
    ("林场", "Forest Farm"),
    ("盟", "League"),
    ("市", "City"),
    ("旗", "Banner"),
    ("县", "County"),
    ("镇", "Town"),
    ("乡", "Township"),
    ("村", "Village"),
)


def romanise(name: str) -> str:
    """Pinyin of the proper name, capitalised, followed by the English kind."""
    name = name.strip()
    for suffix, english in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = "".join(lazy_pinyin(name[: -len(suffix)]))
            return f"{stem[:1].upper()}{stem[1:]} {english}"
    stem = "".join(lazy_pinyin(name))
    return stem[:1].upper() + stem[1:]
