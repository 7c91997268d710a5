"""Install real NATS JavaScript clients from the npm registry for interop tests; skip
with the reason when node or npm is missing or the install fails."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

#: the clients the interop tests run, pinned to their major versions
PACKAGES = ("nats@2", "nats.ws@1", "ws@8")


@functools.cache
def _install() -> tuple[Path | None, str]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None, "node and npm are not installed"
    key = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meshgate-tests"
    prefix = root / f"npm-{key}"
    modules = prefix / "node_modules"
    if all((modules / p.rsplit("@", 1)[0] / "package.json").exists() for p in PACKAGES):
        return modules, ""
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", *PACKAGES],
            capture_output=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"npm install failed: {exc}"
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return None, f"npm install {' '.join(PACKAGES)} failed: {tail}"
    return modules, ""


def node_modules() -> Path:
    """The ``node_modules`` folder holding :data:`PACKAGES`, installing them if needed."""
    path, reason = _install()
    if path is None:
        pytest.skip(f"JavaScript interop test needs the npm clients: {reason}")
    return path
