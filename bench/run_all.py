"""Run the fair comparison (``bench_fair.py``) and print its tables.

    python bench/run_all.py [--json [FILE]] [--repeat 5] [--quick] [bench_fair options]

Runs every scenario of ``bench_fair.py`` (one node, two clusters joined by gateways,
the game relay stepped up until every server fails) against nats-server, meshgate's
NATS port, meshgate's own protocol and the null server, one generator for all,
servers alternating per repeat, and prints the tables ``bench/report.py`` puts in
``docs/performance.md``.  ``--json`` writes every sample with the commit, the command
line, the machine (cores, CPU model, kernel), nats-server's version, the core (pure
or compiled) and the load average; without a file name it goes to
``bench/results/fair-<core>-<commit>-<date>.json`` (``-quick.json`` for ``--quick``,
which git ignores).  ``python bench/report.py`` regenerates the documentation from the
committed result files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import bench_fair  # noqa: E402
import report  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="FILE",
        help="write every sample (default path: bench/results/)",
    )
    args, rest = ap.parse_known_args()
    t0 = time.monotonic()
    doc = bench_fair.main(rest)
    doc["command"] = [sys.executable, *sys.argv]
    doc["wall_s"] = time.monotonic() - t0
    if args.json is not None:
        path = Path(args.json) if args.json else default_path(doc, "--quick" in rest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    print(report.render([doc]))
    return 0


def default_path(doc: dict[str, object], quick: bool) -> Path:
    core = "compiled" if doc["compiled"] else "pure"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = f"fair-{core}-{str(doc['commit'])[:7]}-{stamp}{'-quick' if quick else ''}.json"
    return HERE / "results" / name


if __name__ == "__main__":
    raise SystemExit(main())
