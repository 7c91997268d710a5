"""Instructions per message through the node core, counted by callgrind: a measure of
the hot path that does not depend on what else the machine is doing.

``bench_core``'s node-core scenarios (1000 frames per input chunk through a
``CoreHarness``) run under ``valgrind --tool=callgrind`` twice per tree, with 0 and
with ``--chunks`` chunks; the difference divided by the messages is the cost of one
message (setup and interpreter start cancel out).  Trees are measured alternately.

Run: ``python bench/count_instructions.py OLD_SRC NEW_SRC [--label-old L] ...``
where each SRC is a ``src`` folder holding ``meshgate`` (pure or built with
``tools/compile.py``); writes ``bench/results/instructions-<labels>.json`` and prints
a table.  Needs valgrind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: scenario -> Python that builds ``run`` (one chunk of 1000 messages per call)
SCENARIOS = {
    "client 1 -> 1, 16 B": 'core_path(1, Publish("ship.42.pos", None, b"x" * 16, None), CLIENT)',
    "client 1 -> 10, 128 B": 'core_path(10, Publish("ship.42.pos", None, b"x" * 128, None), CLIENT)',
    "route 1 -> 1, 16 B": (
        'core_path(1, RouteMessage(None, "$G", "ship.42.pos", None, b"x" * 16), ROUTE)'
    ),
}

PROGRAM = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("bench_core", {bench!r})
bc = importlib.util.module_from_spec(spec); spec.loader.exec_module(bc)
from meshgate.protocol import ConnectionKind, Publish, RouteMessage
CLIENT, ROUTE = ConnectionKind.CLIENT, ConnectionKind.ROUTE
core_path = bc.core_path
run = {build}
for _ in range({chunks}):
    run()
"""


def instructions(src: str, scenario: str, chunks: int) -> int:
    """Instructions callgrind counts for the scenario with ``chunks`` chunks."""
    program = PROGRAM.format(
        bench=str(HERE / "bench_core.py"), build=SCENARIOS[scenario], chunks=chunks
    )
    env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            program,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    m = re.search(r"Collected : (\d+)", done.stderr)
    if m is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--label-old", default="old")
    ap.add_argument("--label-new", default="new")
    ap.add_argument("--chunks", type=int, default=20, help="chunks of 1000 messages")
    ap.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)"
    )
    args = ap.parse_args()
    trees = [(args.label_old, args.old), (args.label_new, args.new)]
    rows: dict[str, dict[str, float]] = {}
    for scenario in args.scenario or SCENARIOS:
        for label, src in trees:  # alternating, though counts do not depend on load
            base = instructions(src, scenario, 0)
            full = instructions(src, scenario, args.chunks)
            rows.setdefault(scenario, {})[label] = (full - base) / (args.chunks * 1000)
            print(f"{scenario:<24} {label:<16} {rows[scenario][label]:>10,.0f} instr/msg")
    out = HERE / "results" / f"instructions-{args.label_old}-{args.label_new}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "what": "instructions per message through the node core (callgrind)",
                "trees": dict(trees),
                "chunks": args.chunks,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "date": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print()
    print(f"| scenario | {args.label_old} | {args.label_new} | new/old |")
    print("|---|---:|---:|---:|")
    for scenario, r in rows.items():
        o, n = r[args.label_old], r[args.label_new]
        print(f"| {scenario} | {o:,.0f} | {n:,.0f} | {n / o:.3f} |")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
