from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import meshgate

PUBLIC_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(meshgate.__path__, "meshgate.")
    if not any(part.startswith("_") for part in m.name.split("."))
)


def _defined_under(owner: str | None, modname: str) -> bool:
    """Defined in ``modname`` itself or in a private module beneath it (a re-export)."""
    if owner is None:
        return False
    if owner == modname:
        return True
    rest = owner.removeprefix(modname + ".")
    return rest != owner and rest.split(".")[0].startswith("_")


@pytest.mark.parametrize("modname", ["meshgate", *PUBLIC_MODULES])
def test_all_matches_public_names(modname: str) -> None:
    mod = importlib.import_module(modname)
    assert hasattr(mod, "__all__"), f"{modname} lacks __all__"
    names = set(mod.__all__)
    public = {
        n
        for n, v in vars(mod).items()
        if not n.startswith("_")
        and not inspect.ismodule(v)
        and n not in {"annotations"}
        and _defined_under(getattr(v, "__module__", None), modname)
    }
    submodules = {n for n, v in vars(mod).items() if inspect.ismodule(v) and n in names}
    assert public <= names | submodules, f"{modname}: public but not in __all__: {public - names}"
    for n in names:
        assert hasattr(mod, n), f"{modname}.__all__ names missing {n}"


@pytest.mark.parametrize("modname", ["meshgate", *PUBLIC_MODULES])
def test_every_public_name_has_a_docstring(modname: str) -> None:
    mod = importlib.import_module(modname)
    assert mod.__doc__, modname
    for n in mod.__all__:
        v = getattr(mod, n)
        if inspect.isclass(v) or inspect.isfunction(v) or inspect.ismodule(v):
            assert inspect.getdoc(v), f"{modname}.{n} has no docstring"
