"""Request/reply latency of several meshgate trees against nats-server, alternating.

``bench_node``'s request/reply scenario (one requester, one responder thread, raw
sockets, pre-encoded frames; p50 and p99 of ``--rounds`` round trips per sample) run
against one node per source tree (a ``src`` folder holding ``meshgate``, pure or built
with ``tools/compile.py``) and against nats-server, all started once and measured in
turn within every repeat, so that the machine's load falls on all of them alike.  Each
node is measured on meshgate's protocol and on its NATS port.

Run: ``python bench/bench_reqreply.py old=/tmp/old/src new=src --json FILE``
(``--repeat``, ``--rounds``).  Written for issue 22's request/reply regression: it
compares commits, which ``bench_node`` (one tree) does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_node as bn

HERE = Path(__file__).resolve().parent


def start_node(src: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """One node running the meshgate in ``src``: (process, port, NATS port)."""
    port, nats_port = bn.free_port(), bn.free_port()
    env = {k: v for k, v in os.environ.items() if k != "MESHGATE_PURE"}
    env["PYTHONPATH"] = str(Path(src).resolve())
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_serve_node.py"), str(port), str(nats_port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    bn.wait_port(port, proc)
    bn.wait_port(nats_port, proc)
    return proc, port, nats_port


def core_of(src: str) -> str:
    """Which core the meshgate in ``src`` runs."""
    env = {k: v for k, v in os.environ.items() if k != "MESHGATE_PURE"}
    env["PYTHONPATH"] = str(Path(src).resolve())
    done = subprocess.run(
        [sys.executable, "-c", "import meshgate; print(meshgate.COMPILED)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return "compiled" if done.stdout.strip() == "True" else "pure"


def machine() -> dict[str, object]:
    """Cores, CPU model, kernel and load: what the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", metavar="LABEL=SRC")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    tmp = tempfile.mkdtemp()
    procs: list[subprocess.Popen[bytes]] = []
    targets: dict[str, tuple[bn.Flavour, int]] = {}
    info: dict[str, object] = {"machine": machine(), "trees": {}}
    try:
        for label, src in trees.items():
            proc, port, nats_port = start_node(src)
            procs.append(proc)
            targets[f"{label}"] = (bn.MeshgateFlavour(), port)
            targets[f"{label} NATS port"] = (bn.NatsFlavour(), nats_port)
            info["trees"][label] = {"src": src, "core": core_of(src)}  # type: ignore[index]
        nats = bn.find_nats()
        if nats is None:
            raise SystemExit("nats-server is needed")
        proc, port = bn.start_nats(nats, tmp)
        procs.append(proc)
        targets["nats-server"] = (bn.NatsFlavour(), port)
        version = subprocess.run([nats, "--version"], capture_output=True, text=True)
        info["nats_server"] = version.stdout.strip()
        for fl, p in targets.values():
            bn.request_reply(fl, p, args.rounds // 3)  # warm-up
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in targets}
        names = list(targets)
        for rep in range(args.repeat):
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                fl, p = targets[name]
                samples[name].append(bn.request_reply(fl, p, args.rounds))
            print(f"repeat {rep + 1}/{args.repeat} done", file=sys.stderr)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)
    info["machine"]["loadavg_end"] = list(os.getloadavg())  # type: ignore[index]
    ref = statistics.median(s[0] for s in samples["nats-server"])
    rows = {}
    print(f"{'server':<28} {'p50 median':>10} {'p99 median':>10} {'p50/nats':>8}  p50 samples")
    for name, s in samples.items():
        p50 = statistics.median(x[0] for x in s)
        p99 = statistics.median(x[1] for x in s)
        rows[name] = {
            "p50_median_us": p50,
            "p99_median_us": p99,
            "p50_ratio_to_nats": p50 / ref,
            "p50_samples_us": [x[0] for x in s],
            "p99_samples_us": [x[1] for x in s],
        }
        print(f"{name:<28} {p50:>10.1f} {p99:>10.1f} {p50 / ref:>8.2f}  {[round(x[0]) for x in s]}")
    doc = {
        "benchmark": "request/reply p50/p99, trees alternating (bench/bench_reqreply.py)",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repeats": args.repeat,
        "rounds": args.rounds,
        **info,
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
