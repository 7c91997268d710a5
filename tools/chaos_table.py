"""Run the chaos suite (``tests/test_chaos.py``) several times and print the table of
what each failure costs, as ``docs/operations.md`` shows it.

    python tools/chaos_table.py [--runs 3]

Each row: the failure, whose traffic, messages lost (median and worst over the runs,
at 200 msg/s), duplicates and reorderings (total over the runs), and the longest
silence (median and worst).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            report = Path(tmp) / f"run{run}.jsonl"
            env = {**os.environ, "CHAOS_REPORT": str(report)}
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_chaos.py",
            ]
            done = subprocess.run(cmd, cwd=ROOT, env=env, check=False)
            if done.returncode:
                print(f"run {run}: the chaos suite failed", file=sys.stderr)
                return 1
            for line in report.read_text().splitlines():
                row = json.loads(line)
                rows.setdefault((row["scenario"], row["who"]), []).append(row)
    print(
        f"| failure | traffic | lost (median / worst of {args.runs}) | duplicated | reordered | longest silence, s (median / worst) |"
    )
    print("|---|---|---|---|---|---|")
    for (scenario, who), rs in rows.items():
        lost = [r["lost"] for r in rs]
        gap = [r["longest_gap"] for r in rs]
        print(
            f"| {scenario} | {who} | {statistics.median(lost):g} / {max(lost)} "
            f"| {sum(r['duplicated'] for r in rs)} | {sum(r['reordered'] for r in rs)} "
            f"| {statistics.median(gap):.2f} / {max(gap):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
