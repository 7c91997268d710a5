"""Sample a running node with py-spy and summarise where its time goes.

Used by ``bench_relay.py --profile``: py-spy attaches to the node process by pid,
writes collapsed stacks (``--format raw``), and :func:`summary` turns them into two
short tables: the functions where samples land (self time) and the functions whose
calls hold them (inclusive time), each as a share of all samples.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path


class Sampler:
    """py-spy recording one process until :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        self.out = out
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({Path(path).name})" if path else name


def summary(collapsed: Path, top: int = 15) -> str:
    """Self and inclusive shares of the ``top`` functions in a collapsed-stack file."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", f"{'self %':>7}  function"]
    lines += [f"{100 * n / total:>7.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", f"{'incl %':>7}  function"]
    lines += [f"{100 * n / total:>7.1f}  {f}" for f, n in incl.most_common(top + 10)]
    return "\n".join(lines)
