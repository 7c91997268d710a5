"""Which node core runs, compiled (mypyc, built when meshgate is installed on a
machine with a C compiler) or pure Python; ``MESHGATE_PURE=1`` at import time runs the
pure-Python sources of a compiled install; and the class docstrings mypyc leaves out,
put back.

This module is imported first by ``meshgate/__init__.py``, before any compiled module,
so that the switch takes effect for the whole package."""

from __future__ import annotations

__all__ = ["COMPILED", "CORE", "PURE_ENV", "restore_class_docs"]

import ast
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Literal

_HERE = Path(__file__).parent

#: set to anything but empty or ``0``: the pure-Python core, even where a compiled one is
#: installed (read at import time; at install time it skips the compile)
PURE_ENV = "MESHGATE_PURE"


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Imports meshgate's modules from their ``.py`` sources even where a compiled
    extension module sits beside them (which Python would otherwise prefer)."""

    @staticmethod
    def find_spec(
        fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if not fullname.startswith("meshgate.") or not path:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            source = Path(entry) / f"{leaf}.py"
            if source.is_file() and any(
                (Path(entry) / f"{leaf}{s}").exists() for s in EXTENSION_SUFFIXES
            ):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


_built = any((_HERE / "_node" / f"_core{s}").exists() for s in EXTENSION_SUFFIXES)
_forced_pure = os.environ.get(PURE_ENV, "") not in ("", "0")
if _built and _forced_pure and not any(isinstance(f, _SourcesFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourcesFirst())

#: True when the node core runs as C extension modules built by mypyc, False for pure
#: Python (not built here, or ``MESHGATE_PURE`` set); found without importing it
COMPILED: bool = _built and not _forced_pure
#: which core runs: ``"compiled"`` or ``"pure"`` (as ``meshgate serve``, ``meshgate
#: demo`` and ``/varz`` report it)
CORE: Literal["compiled", "pure"] = "compiled" if COMPILED else "pure"


def restore_class_docs(module: ModuleType) -> None:
    """Compiled classes lose their docstrings; read them from the module's source,
    which an in-place build keeps beside it, so that ``help()`` still has them."""
    file = getattr(module, "__file__", None)
    if file is None or file.endswith(".py"):
        return
    source = Path(file).parent / (Path(file).name.split(".", 1)[0] + ".py")
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError):
        return
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name, None)
            doc = ast.get_docstring(node)
            if isinstance(cls, type) and doc and not cls.__doc__:
                try:
                    cls.__doc__ = doc
                except (AttributeError, TypeError):
                    pass
