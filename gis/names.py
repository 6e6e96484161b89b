"""Romanised (pinyin) names for admin areas, with the area kind translated.

``锡林浩特市`` → ``Xilinhaote City``, ``阿巴嘎旗`` → ``Abaga Banner``, ``额尔敦高毕嘎查`` →
``Erdungaobi Gacha``. Mongolian names are given in the pinyin of their Chinese form, as signs and
statistical lists do.
"""

from __future__ import annotations

import hashlib

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


# Common surnames and given-name characters for synthetic staff (Han and Mongolian names
# written in Chinese, as on Xilingol staff lists).
_SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何林高罗宝巴包乌苏那其白"
_GIVEN = "建国华明军平志强伟丽英芳海东文斌林峰宇静敏巴特尔图雅其木格乌兰朝鲁额尔敦格日勒"
_MONGOLIAN_GIVEN = (
    "巴特尔",
    "其木格",
    "乌兰",
    "朝鲁",
    "额尔敦",
    "格日勒",
    "斯琴",
    "图雅",
    "阿拉坦",
    "那仁",
)


def synthetic_person(key: str, number: int) -> tuple[str, str]:
    """A deterministic synthetic (name, mobile phone) for ``key`` (e.g. a grid code); the
    phone is ``199`` + ``number`` in 8 digits, so distinct numbers give distinct phones."""
    if not 0 <= number < 100_000_000:
        raise ValueError(f"number must have at most 8 digits, got {number}")
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    surname = _SURNAMES[h % len(_SURNAMES)]
    if h >> 8 & 1:
        given = _MONGOLIAN_GIVEN[(h >> 9) % len(_MONGOLIAN_GIVEN)]
    else:
        given = _GIVEN[(h >> 9) % len(_GIVEN)] + _GIVEN[(h >> 17) % len(_GIVEN)]
    return surname + given, f"199{number:08d}"
