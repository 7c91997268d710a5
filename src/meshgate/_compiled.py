"""Whether the node core runs compiled (``tools/compile.py`` builds it with mypyc), and
the class docstrings mypyc leaves out, put back."""

from __future__ import annotations

__all__ = ["COMPILED", "restore_class_docs"]

import ast
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).parent

#: True when the node core runs as C extension modules built by mypyc
#: (``python tools/compile.py``), False for pure Python; found without importing it
COMPILED: bool = any((_HERE / "_node" / f"_core{s}").exists() for s in EXTENSION_SUFFIXES)


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
