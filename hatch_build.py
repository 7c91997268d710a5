"""Build hook: meshgate's node core, compiled with mypyc when this machine can.

Hatchling runs :class:`MypycBuildHook` for every wheel it builds, so ``pip install
meshgate``, ``pip install .`` and ``pip install -e .`` all get the compiled core where a
C compiler and the Python headers are present: the sans-IO node core
(``meshgate/_node``), the codecs and the subscription index become C extension modules
beside their sources (the same code, about twice the speed).  Where they are missing,
or mypyc fails, the build goes on with the pure-Python core and says so once.
``MESHGATE_PURE=1`` at install time builds pure Python on purpose (and, at import time,
runs the pure-Python modules of a compiled install: see ``meshgate/_compiled.py``).

* A wheel (``pip install .``, ``python -m build``, from an sdist): compiled in a copy of
  the sources; the extensions are added to the wheel, which is then platform-specific.
* An editable install (``pip install -e .``): compiled in place, next to the sources in
  ``src/`` (as ``tools/compile.py`` does); a pure reinstall removes them.

The compile takes about 40 s or more (once per install).  ``tools/compile.py`` uses the
same functions to build or remove the in-place build by hand.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported by tools/compile.py, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]

__all__ = [
    "PURE_ENV",
    "MypycBuildHook",
    "clean",
    "compile_core",
    "compiled_files",
    "core_modules",
    "pure_forced",
    "why_not_compiled",
]

#: the environment variable that forces the pure-Python core (install and import time)
PURE_ENV = "MESHGATE_PURE"


def pure_forced() -> bool:
    """``MESHGATE_PURE`` is set to anything but empty or ``0``."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def core_modules(src: Path) -> list[str]:
    """The modules compiled, as paths relative to ``src``: the whole core package (mypyc
    needs a compiled class's bases compiled too, and NodeCore is built from all of
    them), the codecs and the subscription index (the hot path's decode, encode and
    match)."""
    return [
        *sorted(
            p.relative_to(src).as_posix()
            for p in (src / "meshgate" / "_node").glob("_*.py")
            if p.name != "__init__.py"
        ),
        "meshgate/protocol/_nats.py",
        "meshgate/protocol/_codec.py",
        "meshgate/interest/_index.py",
    ]


def compiled_files(src: Path) -> list[Path]:
    """The extension modules a build left in ``src``: one per compiled module and the
    shared ``*__mypyc`` library at the top."""
    return sorted([*src.glob("*.so"), *src.glob("*.pyd"), *(src / "meshgate").rglob("*.so")])


def clean(src: Path) -> int:
    """Remove a build from ``src`` (back to pure Python); the number of files removed."""
    removed = 0
    for f in compiled_files(src):
        f.unlink()
        removed += 1
    for d in ("build", ".mypy_cache"):
        shutil.rmtree(src / d, ignore_errors=True)
    return removed


def why_not_compiled(*, need_mypyc: bool = True) -> str | None:
    """Why this machine cannot compile the core (None: it can, as far as can be told
    before trying): no mypyc (unless ``need_mypyc`` is False: a build installs it), no
    C compiler, no Python headers."""
    try:
        import mypyc  # noqa: F401
    except ImportError:
        if need_mypyc:
            return "mypyc is not installed"
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        return f"no C compiler ({cc[0] if cc else 'cc'} not found)"
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers (Python.h not in {include})"
    return None


def compile_core(src: Path) -> str | None:
    """Compile the core in place in ``src`` with mypyc; None on success, else why not
    (the last lines of its output), with nothing compiled left behind."""
    clean(src)
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
                *core_modules(src),
            ],
            cwd=src,
            capture_output=True,
            text=True,
            check=False,
        )
    shutil.rmtree(src / "build", ignore_errors=True)
    if done.returncode != 0 or not compiled_files(src):
        clean(src)
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return "mypyc failed: " + " / ".join(tail)
    return None


class MypycBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile the core into the wheel being built, or say once why it stays pure."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Before a wheel is built: compile, and add the extension modules to it."""
        if self.target_name != "wheel":
            return
        editable = version == "editable"
        src = Path(self.root) / "src"
        if editable:
            clean(src)  # an earlier build must not outlive a pure reinstall
        reason = f"{PURE_ENV}=1 is set" if pure_forced() else why_not_compiled()
        work = src
        if reason is None and not editable:
            self._tmp = tempfile.mkdtemp(prefix="meshgate-mypyc-")
            work = Path(self._tmp) / "src"
            shutil.copytree(src, work, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        if reason is None:
            self.app.display_info("meshgate: compiling the core with mypyc (about a minute)")
            reason = compile_core(work)
        if reason is not None:
            advice = (
                ""
                if pure_forced()
                else "; the compiled core is about twice as fast: install a C compiler "
                "and the Python headers, then reinstall (see docs/deploy.md)"
            )
            self.app.display_warning(
                f"meshgate: installing the pure-Python core ({reason}){advice}"
            )
            return
        if not editable:
            for f in compiled_files(work):
                build_data["force_include"][str(f)] = f.relative_to(work).as_posix()
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """After the wheel is written: drop the copy it was compiled in."""
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
