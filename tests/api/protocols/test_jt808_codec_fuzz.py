"""Fuzz the JT/T 808 codec itself (no server, no database): 20,000 seeded mutations of valid
frames of every kind go through ``decode_frame`` and through the stream reader, reassembler and
``decode_packet``. The codec refuses bad bytes only with its own documented errors, never
crashes, and its buffers stay bounded. (``python -m bench fuzz_jt808`` runs a million, with
frames/s, the slowest frame and RSS before/after.)"""

from __future__ import annotations

from api.protocols import jt808
from tests.api.protocols.jt808_mutations import run_fuzz

FRAMES = 20_000


def test_mutated_frames_are_refused_with_documented_errors_only() -> None:
    report = run_fuzz(FRAMES, seed=2024)
    assert report.crashes == []
    assert report.frames == FRAMES
    reasons = {r.removeprefix("stream:") for r in report.refused}
    assert reasons <= set(jt808.REASONS)
    # the mix reaches every layer: framing, header, body, subpackage reassembly
    for reason in ("bad_escape", "bad_checksum", "too_short", "length_mismatch", "invalid_bcd"):
        assert report.refused[reason] > 0, reason
    for reason in ("invalid_header", "invalid_body", "invalid_text"):
        assert report.refused[reason] > 0, reason
    assert report.decoded > FRAMES // 20
    assert report.reassembled > 0


def test_fuzzing_keeps_the_buffers_bounded() -> None:
    report = run_fuzz(5_000, seed=7)
    assert report.reader_max_buffered <= 4096
    assert report.reassembly_max_bytes <= 4 << 20


def test_the_fuzzer_is_reproducible() -> None:
    a, b = run_fuzz(2_000, seed=11), run_fuzz(2_000, seed=11)
    assert (a.decoded, a.refused) == (b.decoded, b.refused)
