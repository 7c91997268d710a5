"""The compiled core by default: which core runs (``meshgate.CORE``), ``MESHGATE_PURE``
at import time, and the build hook's decision to compile or fall back to pure Python
with one warning."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import meshgate

ROOT = Path(__file__).resolve().parent.parent


def _load_hook() -> types.ModuleType:
    """``hatch_build.py`` (the build hook, not a package module), loaded from its path."""
    spec = importlib.util.spec_from_file_location("_meshgate_hatch_build", ROOT / "hatch_build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load_hook()

#: which core a fresh interpreter runs, and whether a compiled class's method is Python
PROBE = (
    "import types, meshgate; from meshgate.protocol import Decoder; "
    "print(meshgate.CORE, isinstance(Decoder.next_raw, types.FunctionType))"
)


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != hook.PURE_ENV}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_core_is_named() -> None:
    assert meshgate.CORE in ("compiled", "pure")
    assert meshgate.COMPILED is (meshgate.CORE == "compiled")


def test_pure_at_import_time() -> None:
    """MESHGATE_PURE=1 runs the Python sources, even of a compiled install."""
    assert _probe(MESHGATE_PURE="1") == "pure True"
    assert _probe(MESHGATE_PURE="0").split()[0] == _probe().split()[0]


def test_compiled_install_runs_compiled() -> None:
    if not any(hook.compiled_files(ROOT / "src")) and meshgate.CORE == "pure":
        pytest.skip("this install has no compiled core (no C compiler, or MESHGATE_PURE)")
    assert _probe() == "compiled False"


class _App:
    """What the hook says to the builder (hatchling's ``app``)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def display_warning(self, text: str) -> None:
        self.warnings.append(text)

    def display_info(self, text: str) -> None:
        self.infos.append(text)


def _hook(root: Path, app: _App, target: str = "wheel") -> Any:
    try:  # hatchling installed: its own constructor
        return hook.MypycBuildHook(str(root), {}, None, None, str(root), target, app)
    except TypeError:  # without hatchling the hook's base is object
        h = hook.MypycBuildHook()
        h.root, h.target_name, h.app = str(root), target, app
        return h


@pytest.mark.parametrize("version", ["standard", "editable"])
def test_no_compiler_falls_back_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    (tmp_path / "src" / "meshgate" / "_node").mkdir(parents=True)
    stale = tmp_path / "src" / "meshgate" / "_node" / "_core.cpython-311-x86_64-linux-gnu.so"
    stale.write_bytes(b"")
    monkeypatch.delenv(hook.PURE_ENV, raising=False)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    app = _App()
    build_data: dict[str, Any] = {"force_include": {}, "pure_python": True}
    _hook(tmp_path, app).initialize(version, build_data)
    assert len(app.warnings) == 1
    assert "pure-Python core" in app.warnings[0]
    assert "no C compiler" in app.warnings[0]
    assert build_data == {"force_include": {}, "pure_python": True}
    # an editable install removes an earlier build, so that the pure core runs
    assert stale.exists() == (version == "standard")


def test_pure_forced_at_install_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hook.PURE_ENV, "1")
    app = _App()
    build_data: dict[str, Any] = {"force_include": {}, "pure_python": True}
    _hook(tmp_path, app).initialize("standard", build_data)
    assert len(app.warnings) == 1
    assert "MESHGATE_PURE=1" in app.warnings[0]
    assert build_data["pure_python"] is True
    assert not app.infos  # no compile was tried


def test_sdist_is_left_alone(tmp_path: Path) -> None:
    app = _App()
    build_data: dict[str, Any] = {}
    _hook(tmp_path, app, "sdist").initialize("standard", build_data)
    assert build_data == {}
    assert not app.warnings


def test_why_not_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc --flag")
    assert hook.why_not_compiled(need_mypyc=False) == "no C compiler (/nonexistent/cc not found)"
    assert hook.why_not_compiled() in (
        "mypyc is not installed",
        "no C compiler (/nonexistent/cc not found)",
    )
