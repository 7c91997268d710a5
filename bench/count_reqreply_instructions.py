"""Instructions per request/reply round trip through a node, counted by callgrind.

A node (the meshgate in ``SRC``, on its NATS port) runs under ``valgrind
--tool=callgrind`` while ``bench_node``'s request/reply scenario does ``R1`` and then,
in a second run, ``R2`` round trips; the difference of the two totals divided by
``R2 - R1`` is the node's user-space work per round trip (start-up cancels out), which
does not depend on what else the machine is doing.  Kernel work (the syscalls) is not
counted: ``strace -c -p`` on the node tells those.

Run: ``python bench/count_reqreply_instructions.py LABEL=SRC ... [--rounds R1 R2]
[--json FILE]``.  Written for issue 22's request/reply regression.  Slow (valgrind).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_node as bn

#: a node on a NATS port that ends cleanly on SIGINT (callgrind then writes its counts)
NODE = """
import sys, trio, meshgate
async def main(port, nats_port):
    cfg = meshgate.GatewayConfig(
        listen=f"127.0.0.1:{port}", nats_listen=(f"127.0.0.1:{nats_port}",),
        max_pending_bytes=512 * 1024 * 1024, ping_interval=600.0)
    async with meshgate.open_gateway(cfg):
        print("ready", flush=True)
        await trio.sleep_forever()
try:
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
except KeyboardInterrupt:
    pass
"""


def total(src: str, rounds: int, out: Path) -> int:
    """Instructions callgrind counts in a node that served ``rounds`` round trips."""
    port, nats_port = bn.free_port(), bn.free_port()
    env = {k: v for k, v in os.environ.items() if k != "MESHGATE_PURE"}
    env.update(PYTHONPATH=str(Path(src).resolve()), PYTHONHASHSEED="0")
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            NODE,
            str(port),
            str(nats_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    if rounds:
        bn.request_reply(bn.NatsFlavour(), nats_port, rounds)
    proc.send_signal(signal.SIGINT)
    proc.wait(600)
    text = out.read_text()
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    assert found is not None, "no callgrind totals"
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", metavar="LABEL=SRC")
    ap.add_argument("--rounds", type=int, nargs=2, default=(200, 700), metavar=("R1", "R2"))
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    r1, r2 = args.rounds
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, src in (t.split("=", 1) for t in args.trees):
            a = total(src, r1, Path(tmp) / f"{label}-{r1}.out")
            b = total(src, r2, Path(tmp) / f"{label}-{r2}.out")
            rows[label] = {"per_round_trip": (b - a) / (r2 - r1), "total_r1": a, "total_r2": b}
            print(
                f"{label:<24} {rows[label]['per_round_trip']:>12,.0f} instructions per round trip"
            )
    if args.json:
        doc = {
            "what": "instructions per request/reply round trip in the node, NATS port (callgrind)",
            "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rounds": [r1, r2],
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
