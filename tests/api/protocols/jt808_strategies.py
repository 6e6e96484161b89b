"""Hypothesis strategies for JT/T 808 messages, shared by the codec, reader and fuzz tests.

Every strategy draws values the wire can carry exactly (integers in range, coordinates and
speeds as wire integers divided by their scale, GBK text that survives encode → decode), so a
round trip must reproduce the very same object.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from api.protocols import jt808
from api.protocols.jt808.location import EXTRA_ITEMS

VERSIONS: tuple[jt808.Version, ...] = (2013, 2019)
WORD = st.integers(0, 0xFFFF)
DWORD = st.integers(0, 0xFFFFFFFF)
BYTE = st.integers(0, 0xFF)
SOUTH, WEST = 4, 8


def gbk_text(max_bytes: int) -> st.SearchStrategy[str]:
    """GBK-encodable text of at most ``max_bytes`` encoded bytes, without NUL (padding)."""
    # Plates mix Chinese province abbreviations, ASCII and the middle dot: 蒙H·12345.
    plate_like = st.text(
        st.sampled_from("蒙京冀晋辽吉黑沪苏浙粤川ABCDHJKLMNPQRSTUVWXYZ0123456789·-")
    )
    anything = st.text(st.characters(codec="gbk", min_codepoint=1))
    return (plate_like | anything).filter(
        lambda s: len(s.encode("gbk")) <= max_bytes and s.encode("gbk").decode("gbk") == s
    )


def phones(version: jt808.Version) -> st.SearchStrategy[str]:
    """Phone numbers as a server would write them (up to 12 or 20 digits)."""
    return st.text("0123456789", min_size=1, max_size=12 if version == 2013 else 20)


# 2000-01-01 00:00 and 2099-12-31 23:59:59 at GMT+8, whole seconds, in UTC.
TIMES = st.none() | st.datetimes(
    min_value=datetime(1999, 12, 31, 16, 0, 0),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2099, 12, 31, 15, 59, 59),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda t: t.replace(microsecond=0))


def _scaled(per_unit: int, size: int) -> st.SearchStrategy[float | int]:
    raw = st.integers(0, (1 << (8 * size)) - 1)
    return raw.map(lambda v: v / per_unit) if per_unit != 1 else raw


@st.composite
def _raw_extras(draw: st.DrawFn) -> dict[int, str]:
    ids = draw(st.lists(BYTE, max_size=4, unique=True))
    extras: dict[int, str] = {}
    for item_id in ids:
        # A known id with an unexpected length also stays raw; the expected length never does,
        # so such draws are left out below.
        extras[item_id] = draw(st.binary(max_size=12)).hex()
    return {k: v for k, v in extras.items() if not _would_decode_as_known(k, v)}


def _would_decode_as_known(item_id: int, hex_value: str) -> bool:
    spec = EXTRA_ITEMS.get(item_id)
    return spec is not None and spec[1] == len(hex_value) // 2


def _raw_tails() -> st.SearchStrategy[str]:
    """Vendor bytes after the items that do not start a complete item (kept raw on decode)."""
    return (
        st.binary(max_size=8)
        .filter(lambda b: len(b) < 2 or 2 + b[1] > len(b))
        .map(lambda b: b.hex())
    )


@st.composite
def locations(draw: st.DrawFn) -> jt808.Location:
    """Any location a terminal can send, with hemisphere bits matching the coordinate signs."""
    south, west = draw(st.booleans()), draw(st.booleans())
    lat = draw(DWORD) / 1e6
    lon = draw(DWORD) / 1e6
    status = draw(DWORD) & ~(SOUTH | WEST) | (SOUTH if south else 0) | (WEST if west else 0)
    extras: dict[str, Any] = {}
    for name, size, per_unit in EXTRA_ITEMS.values():
        extras[name] = draw(st.none() | _scaled(per_unit, size))
    return jt808.Location(
        alarm=draw(DWORD),
        status=status,
        latitude=-lat if south else lat,
        longitude=-lon if west else lon,
        altitude=draw(WORD),
        speed_ms=draw(WORD) / 36,
        direction=draw(WORD),
        time=draw(TIMES),
        raw_extras=draw(_raw_extras()),
        raw_tail=draw(_raw_tails()),
        **extras,
    )


def _replies(cls: type[jt808.TerminalGeneralReply | jt808.PlatformGeneralReply]) -> Any:
    return st.builds(cls, WORD, WORD, st.sampled_from(jt808.ReplyResult))


@st.composite
def _register_replies(draw: st.DrawFn) -> jt808.RegisterReply:
    result = draw(st.sampled_from(jt808.RegisterResult))
    code = draw(st.binary(max_size=40)) if result == jt808.RegisterResult.SUCCESS else b""
    return jt808.RegisterReply(draw(WORD), result, code)


def message_strategies(version: jt808.Version) -> dict[str, st.SearchStrategy[Any]]:
    """One strategy per message type of the codec (every id it knows, plus unknown ids)."""
    sizes = {2013: (5, 20, 7), 2019: (11, 30, 30)}[version]
    register = st.builds(
        jt808.Register,
        WORD,
        WORD,
        gbk_text(sizes[0]),
        gbk_text(sizes[1]),
        gbk_text(sizes[2]),
        BYTE,
        gbk_text(40),
    )
    if version == 2013:
        auth = st.builds(jt808.Authentication, st.binary(max_size=60))
        text = st.builds(jt808.TextMessage, BYTE, gbk_text(200))
        resend = st.builds(jt808.ResendRequest, WORD, st.lists(WORD, max_size=255).map(tuple))
    else:
        auth = st.builds(jt808.Authentication, st.binary(max_size=255), gbk_text(15), gbk_text(20))
        text = st.builds(jt808.TextMessage, BYTE, gbk_text(200), st.sampled_from(jt808.TextType))
        # Up to 600 indices: bodies beyond 1023 bytes travel as subpackages.
        resend = st.builds(jt808.ResendRequest, WORD, st.lists(WORD, max_size=600).map(tuple))
    known_ids = {0x0001, 0x8001, 0x0002, 0x0003, 0x0100, 0x8100, 0x0102, 0x0200}
    known_ids |= {0x0704, 0x8201, 0x0201, 0x8202, 0x8300, 0x8003}
    return {
        "0x0001 terminal reply": _replies(jt808.TerminalGeneralReply),
        "0x8001 platform reply": _replies(jt808.PlatformGeneralReply),
        "0x0002 heartbeat": st.just(jt808.Heartbeat()),
        "0x0003 unregister": st.just(jt808.Unregister()),
        "0x0100 register": register,
        "0x8100 register reply": _register_replies(),
        "0x0102 authentication": auth,
        "0x0200 location": locations(),
        "0x0704 batch": st.builds(
            jt808.BatchLocation,
            st.sampled_from(jt808.BatchType),
            st.lists(locations(), max_size=30).map(tuple),
        ),
        "0x8201 position query": st.just(jt808.PositionQuery()),
        "0x0201 position reply": st.builds(jt808.PositionQueryReply, WORD, locations()),
        "0x8202 tracking": st.builds(jt808.TemporaryTracking, st.just(0))
        | st.builds(jt808.TemporaryTracking, st.integers(1, 0xFFFF), DWORD),
        "0x8300 text": text,
        "0x8003 resend request": resend,
        "unknown": st.builds(
            jt808.UnknownMessage,
            WORD.filter(lambda i: i not in known_ids),
            st.binary(max_size=80),
        ),
    }


MESSAGE_TYPES = tuple(message_strategies(2013))


def messages(version: jt808.Version) -> st.SearchStrategy[Any]:
    """Any message of the given edition."""
    return st.one_of(*message_strategies(version).values())
