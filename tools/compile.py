"""Compile the node core with mypyc, in place, for a faster node (optional).

    python tools/compile.py          # build: one extension per core module, next to it
    python tools/compile.py --clean  # back to pure Python

The sans-IO core (``meshgate/_node``), the codecs and the subscription index are plain,
fully typed Python (``mypy --strict``), which mypyc turns into C extensions: the same
code, about twice the publish rate in process.  Python prefers an extension module to
the ``.py`` beside it, so an editable install picks the build up at once;
``meshgate.COMPILED`` says which one runs.  The test suite passes either way (CI runs
the core's tests against a build too).  mypyc drops docstrings: class docstrings are
put back from the source beside the build, method docstrings are not (the
documentation is built from the source).  Needs mypy (the ``lint`` dependency group)
and a C compiler with the Python headers.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
#: the modules compiled: the whole core package (mypyc needs a compiled class's bases
#: compiled too, and NodeCore is built from all of them), the codecs and the
#: subscription index (the hot path's decode, encode and match)
MODULES = [
    *sorted(
        p.relative_to(SRC).as_posix()
        for p in (SRC / "meshgate" / "_node").glob("_*.py")
        if p.name != "__init__.py"
    ),
    "meshgate/protocol/_nats.py",
    "meshgate/protocol/_codec.py",
    "meshgate/interest/_index.py",
]


def clean() -> int:
    removed = 0
    for so in [*SRC.glob("*.so"), *(SRC / "meshgate").rglob("*.so")]:
        so.unlink()
        removed += 1
    shutil.rmtree(SRC / "build", ignore_errors=True)
    shutil.rmtree(SRC / ".mypy_cache", ignore_errors=True)
    print(f"removed {removed} compiled modules")
    return 0


def build() -> int:
    clean()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "mypy.ini"
        # the project's strict settings live in pyproject.toml, which setuptools (used
        # by mypyc to build) would also read and reject; the code is checked by CI
        config.write_text("[mypy]\nignore_missing_imports = True\n")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypyc",
                "--config-file",
                str(config),
                "--cache-dir",
                str(Path(tmp) / "cache"),
                *MODULES,
            ],
            cwd=SRC,
            stdout=subprocess.DEVNULL,
            check=False,
        )
    shutil.rmtree(SRC / "build", ignore_errors=True)
    if done.returncode != 0:
        print("mypyc failed; nothing compiled is left behind", file=sys.stderr)
        clean()
        return 1
    check = subprocess.run(
        [sys.executable, "-c", "import meshgate; print(meshgate.COMPILED)"],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"compiled {len(MODULES)} modules; meshgate.COMPILED = {check.stdout.strip()}")
    return 0 if check.stdout.strip() == "True" else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    return clean() if ap.parse_args().clean else build()


if __name__ == "__main__":
    raise SystemExit(main())
