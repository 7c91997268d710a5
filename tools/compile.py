"""Compile the node core with mypyc, in place, by hand (an install already does it).

    python tools/compile.py          # build: one extension per core module, next to it
    python tools/compile.py --clean  # back to pure Python

Installing meshgate compiles the core when the machine has a C compiler (the build
hook, ``hatch_build.py``, whose functions this uses), so this is for working on the
core: rebuild after editing it (an editable install keeps the build it made at install
time, which goes stale when the sources change), or remove the build.  The sans-IO
core (``meshgate/_node``), the codecs and the subscription index are plain, fully typed
Python (``mypy --strict``), which mypyc turns into C extensions: the same code, about
twice the publish rate in process.  Python prefers an extension module to the ``.py``
beside it, so an editable install picks the build up at once; ``meshgate.CORE`` says
which one runs (``MESHGATE_PURE=1`` runs the sources anyway).  mypyc drops docstrings:
class docstrings are put back from the source beside the build, method docstrings are
not (the documentation is built from the source).  Needs mypy (the ``lint`` dependency
group) and a C compiler with the Python headers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(ROOT))

from hatch_build import clean, compile_core, core_modules  # noqa: E402


def build() -> int:
    why = compile_core(SRC)
    if why is not None:
        print(f"{why}; nothing compiled is left behind", file=sys.stderr)
        return 1
    check = subprocess.run(
        [sys.executable, "-c", "import meshgate; print(meshgate.CORE)"],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "MESHGATE_PURE"},
    )
    core = check.stdout.strip()
    print(f"compiled {len(core_modules(SRC))} modules; meshgate.CORE = {core!r}")
    return 0 if core == "compiled" else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    if ap.parse_args().clean:
        print(f"removed {clean(SRC)} compiled modules")
        return 0
    return build()


if __name__ == "__main__":
    raise SystemExit(main())
