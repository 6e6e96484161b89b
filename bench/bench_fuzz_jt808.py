"""JT/T 808 codec fuzzing: a million seeded mutations of valid frames (bit flips, truncation,
0x7D/0x7E escapes, wrong check codes and lengths, subpackage headers, bad BCD …) through
``decode_frame`` and through the stream reader, reassembler and ``decode_packet``.

Figures: frames/s, crashes (anything but the codec's own ``Jt808Error``; must be 0), refusals per
reason, the slowest single frame and p50/p95/p99 per frame (one frame in ten is timed), and the
process RSS before, after the first 100,000 frames and at the end (flat = no leak). Baseline:
the same loop over the valid, unmutated seed frames in the same run.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from api.protocols import jt808
from bench.common import percentiles_ms, write_result
from tests.api.protocols.jt808_mutations import FuzzReport, run_fuzz, seed_packets, wire


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _baseline(seconds: float = 3.0) -> float:
    """Frames/s of the same two decode paths over valid frames."""
    frames = [wire(p) for p in seed_packets()]
    reader, joiner = jt808.FrameReader(), jt808.Reassembler()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for frame in frames:
            jt808.decode_frame(frame)
            for packet in reader.feed(frame):
                whole = joiner.add(packet, now=0.0)
                if whole is not None:
                    jt808.decode_packet(whole)
        done += len(frames)
    return done / (time.perf_counter() - start)


def run(*, quick: bool = False) -> dict[str, Any]:
    frames = 100_000 if quick else 1_000_000
    gc.collect()
    before = rss_mb()
    marks: dict[int, float] = {}

    def mark(report: FuzzReport) -> None:
        marks[report.frames] = rss_mb()

    start = time.perf_counter()
    report = run_fuzz(frames, seed=808, sample_every=10, every=frames // 10, progress=mark)
    seconds = time.perf_counter() - start
    gc.collect()
    after = rss_mb()
    baseline = _baseline()
    first = marks[min(marks)]
    figures = {
        "frames": report.frames,
        "seconds": round(seconds, 1),
        "frames_per_s": round(report.frames / seconds),
        "crashes": len(report.crashes),
        "decoded": report.decoded,
        "reassembled": report.reassembled,
        "refused": dict(report.refused.most_common()),
        "max_frame_ms": round(report.max_frame_s * 1000, 3),
        **percentiles_ms(np.frombuffer(report.frame_seconds, dtype=np.float64)),
        "reader_max_buffered_bytes": report.reader_max_buffered,
        "reassembly_max_bytes": report.reassembly_max_bytes,
        "rss_before_mb": before,
        "rss_after_first_tenth_mb": first,
        "rss_end_mb": after,
        "rss_growth_after_warmup_mb": round(marks[max(marks)] - first, 1),
        "baseline": "same decode paths over valid, unmutated frames",
        "baseline_frames_per_s": round(baseline),
        "ratio_to_valid": round(report.frames / seconds / baseline, 3),
        "first_crashes": report.crashes[:5],
    }
    write_result("fuzz_jt808", figures)
    return figures
