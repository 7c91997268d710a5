"""Apply each curated mutant of meshgate (tools/mutants.py) and run the deterministic
tests against it; report which mutants the tests kill.

Usage: ``python tools/mutation_check.py [NAME ...]`` from the repository root, in the
environment that runs the tests.  Exits 1 if any mutant survives.  Each mutant runs
in a copy of ``src/`` on ``PYTHONPATH``; the working tree is never changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parent.parent
#: deterministic tests run against every mutant (no random model tests)
DEFAULT_TESTS = ("tests/core", "tests/test_shell.py")


def apply(mutant: Mutant, src: Path) -> None:
    path = src / "meshgate" / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.name}: the text to mutate is not in {mutant.path} exactly once")
    path.write_text(text.replace(mutant.old, mutant.new))


def run(mutant: Mutant, tests: tuple[str, ...] | None = None) -> tuple[bool, float, str]:
    """True if the tests kill ``mutant``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
        apply(mutant, src)
        env = dict(os.environ, PYTHONPATH=str(src), HYPOTHESIS_PROFILE="ci")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            *(tests or (*DEFAULT_TESTS, *mutant.tests)),
        ]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
        if proc.returncode not in (0, 1):  # pytest: 1 = tests failed; else a broken run
            raise SystemExit(f"{mutant.name}: pytest exited {proc.returncode}:\n{proc.stdout}")
        return proc.returncode == 1, time.monotonic() - start, lines[0] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument(
        "--tests", nargs="+", help="run these tests instead (e.g. to see what one test kills)"
    )
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    killed = 0
    for m in chosen:
        dead, seconds, first = run(m, tuple(args.tests) if args.tests else None)
        killed += dead
        verdict = "killed  " if dead else "SURVIVED"
        print(f"{verdict} {m.name:38} {seconds:5.1f}s  {m.breaks}")
        if dead and first:
            print(f"         by {first.removeprefix('FAILED ')[:100]}")
    print(f"\n{killed}/{len(chosen)} curated mutants killed")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    raise SystemExit(main())
