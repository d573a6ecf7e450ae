"""Benchmark scripts' own refusals. Each script's run, and every assertion on its report, sits with its documented
command in docs/benchmarks.md or docs/benchmarks-gpu.md (tests/test_docs.py with tests/benchmark_reports.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_dinet_ratio_benchmark_names_a_checkout_without_dinet(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dinet_ratio.py"), "--dinet", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"--dinet {tmp_path}: no models/DINet.py there" in proc.stderr
