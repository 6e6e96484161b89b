"""Benchmarks: each ``bench/bench_<name>.py`` has ``run(quick: bool) -> dict`` and writes
``bench/results/<name>.json`` in the DESIGN §12 format (flat keys, units in the key names, the
same-run baseline beside the figure)."""
