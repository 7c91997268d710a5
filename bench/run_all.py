"""Run the comparative benchmarks and print one table of ratios to nats-server.

    python bench/run_all.py [--quick] [--repeat 5] [--json results.json]

Runs ``bench_node.py`` (one node: meshgate's protocol, its NATS port, nats-server),
``bench_supercluster.py`` (two clusters: meshgate's gateways, nats-server's, and
meshgate nodes on a nats-server backbone) and ``bench_relay.py`` (the game relay: the
most clients served at p99 <= 5 ms), each scenario warmed up and repeated, each
server in its own process, and prints every row's median ratio.  ``--json`` writes
every benchmark's full results (samples included) as one document.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BENCHMARKS = ("bench_node.py", "bench_supercluster.py", "bench_relay.py")
COLUMNS = {
    "meshgate": "meshgate",
    "meshgate-nats": "NATS port",
    "meshgate-backbone": "on nats bb",
}


def relay_rows(doc: dict[str, Any]) -> dict[str, Any]:
    """``bench_relay.py``'s steps as one row: the most clients each server sustained
    at p99 <= 5 ms (medians of the repeats), and meshgate's ratio to nats-server."""
    sustained: dict[str, int] = {}
    for step in doc["steps"]:
        server = "nats" if step["server"] == "nats-server" else step["server"]
        if step["p99_ms"]["median"] <= 5.0:
            sustained[server] = max(sustained.get(server, 0), step["clients"])
        else:
            sustained.setdefault(server, 0)
    ref = sustained.get("nats")
    servers = {
        k: {"median": v, "ratio_to_nats": v / ref if ref else float("nan")}
        for k, v in sustained.items()
    }
    row = {"scenario": "clients at p99 <= 5 ms", "unit": "clients", "servers": servers}
    return {**doc, "rows": [row]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny counts, one repeat")
    ap.add_argument("--repeat", type=int, default=5, help="repeats per scenario (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON")
    args = ap.parse_args()
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in BENCHMARKS:
            out = Path(tmp) / f"{name}.json"
            cmd = [
                sys.executable,
                str(HERE / name),
                "--json",
                str(out),
                "--repeat",
                str(args.repeat),
            ]
            if args.quick:
                cmd.append("--quick")
            print(f"running {name} ...", file=sys.stderr, flush=True)
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False)
            if done.returncode != 0:
                print(f"{name} failed with {done.returncode}", file=sys.stderr)
                return 1
            doc = json.loads(out.read_text())
            docs.append(relay_rows(doc) if name == "bench_relay.py" else doc)
    present = [c for c in COLUMNS if any(c in r["servers"] for d in docs for r in d["rows"])]
    head = f"{'benchmark':<13} {'scenario':<28} {'unit':<13}" + "".join(
        f" {COLUMNS[c]:>11}" for c in present
    )
    print(head)
    print("-" * len(head))
    for doc in docs:
        for row in doc["rows"]:
            cells = "".join(
                f" {row['servers'][c]['ratio_to_nats']:>11.2f}" if c in row["servers"] else " " * 12
                for c in present
            )
            print(f"{doc['benchmark']:<13} {row['scenario']:<28} {row['unit']:<13}{cells}")
    import meshgate

    core = "compiled with mypyc (tools/compile.py)" if meshgate.COMPILED else "pure Python"
    print(
        f"median ratio to nats-server in the same run ({docs[0]['repeats']} repeats after a "
        f"warm-up); for latency, lower is better; meshgate's core: {core}"
    )
    if args.json:
        doc = {"schema": 1, "compiled": meshgate.COMPILED, "benchmarks": docs}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
