"""Every example runs as a smoke test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip(), "an example should show what it did"


def test_demo_runs_and_prints_the_table() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshgate",
            "demo",
            "--clients",
            "30",
            "--duration",
            "2",
            "--messages",
            "3000",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    rows = dict(
        line.split("  ", 1)
        for line in out.splitlines()
        if "  " in line and not line.startswith(" ")
    )
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["game clients (loopback TCP)"] == "30"
    assert int(rows["updates published"]) > 0
    assert int(rows["deliveries (interest-matched)"]) > 0
    assert rows["protocol errors"] == "0"
    assert "ms /" in rows["delivery latency p50 / p99"]
    assert rows["account mode at the end"] == "Interest-Only"


def test_core_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_core.py"), "--quick"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "cache miss" in proc.stdout.decode()


def test_node_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_node.py"), "--quick", "--no-nats"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "request/reply p50" in proc.stdout.decode()


def test_supercluster_benchmark_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_supercluster.py"), "--quick", "--no-nats"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert "A -> B request/reply p50" in proc.stdout.decode()
