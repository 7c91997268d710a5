"""Write the configuration reference (``docs/config-reference.md``) from the definitions.

    python tools/config_reference.py          # (re)write docs/config-reference.md
    python tools/config_reference.py --check  # exit 1 if the committed file is stale

Every field of :class:`meshgate.GatewayConfig`, :class:`meshgate.User` and
:class:`meshgate.Permissions` comes from the attrs definitions in
``src/meshgate/config.py``: its name (the TOML key), its type, its default and the
``#:`` comment above it (or the class docstring's description).  Fields a running node
applies on reload (``SIGHUP``) are marked.  ``tests/test_config_reference.py`` fails when
the committed page differs from what this script writes, so the page cannot drift.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "meshgate" / "config.py"
OUTPUT = ROOT / "docs" / "config-reference.md"

#: fields set in TOML as a table rather than a value, and the keys the table takes
TABLES = {
    "tls": "`[tls]` table: `cert_file`, `key_file`, optional `ca_file`",
    "cluster_tls": "`[cluster_tls]` table: `cert_file`, `key_file`, `ca_file` (also sets `cluster_tls_dial`)",
    "cluster_tls_dial": "set by `[cluster_tls]`",
    "gateway_tls": "`[gateway_tls]` table: `cert_file`, `key_file`, `ca_file` (also sets `gateway_tls_dial`)",
    "gateway_tls_dial": "set by `[gateway_tls]`",
    "backbone_tls": "`[backbone_tls]` table: `ca_file`, optional `cert_file`, `key_file`",
    "gateways": "`[gateways]` table: cluster name = list of URLs",
    "gateway_secrets": "`[gateway_secrets]` table: cluster name = secret",
    "users": "`[[users]]` array of tables (see *User* below)",
    "publish": "`publish` table (see *Permissions* below)",
    "subscribe": "`subscribe` table (see *Permissions* below)",
}


def _comments(source: str, class_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """Each field's ``#:`` comment and its annotation's source text, for ``class_name``."""
    lines = source.splitlines()
    tree = ast.parse(source)
    docs: dict[str, str] = {}
    types: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            name = stmt.target.id
            types[name] = ast.get_source_segment(source, stmt.annotation) or ""
            above: list[str] = []
            i = stmt.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                above.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            docs[name] = " ".join(above)
    return docs, types


def _default(field: attrs.Attribute[Any]) -> str:
    default: Any = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        value = default.factory()
        if hasattr(type(value), "__attrs_attrs__"):
            return f"`{type(value).__name__}()`"
    else:
        value = default
    if isinstance(value, dict) and not value:
        return "`{}`"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "none"
    if isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        mib = value / (1024 * 1024)
        unit = f"{mib:g} MiB" if mib >= 1 else f"{value // 1024} KiB"
        return f"`{value}` ({unit})"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`".replace("'", '"')


def _cell(text: str) -> str:
    """Markdown table cell text: reST literals and roles as Markdown code spans."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|").replace("\n", " ")


def _section(cls: type, source: str, reloadable: frozenset[str], intro: str) -> list[str]:
    docs, types = _comments(source, cls.__name__)
    out = [f"## {cls.__name__}", "", intro, ""]
    out += ["| Key | Type | Default | Reload | Description |", "|---|---|---|---|---|"]
    for field in attrs.fields(cls):
        name = field.name
        doc = docs.get(name) or ""
        doc = doc.strip()
        if doc and not doc.endswith("."):
            doc += "."
        if name in TABLES:
            doc = f"{doc} TOML: {TABLES[name]}.".strip()
        out.append(
            f"| `{name}` | `{_cell(types.get(name, ''))}` | {_cell(_default(field))} | "
            f"{'yes' if name in reloadable else ''} | {_cell(doc)} |"
        )
    out.append("")
    return out


def render() -> str:
    """The reference page, as Markdown."""
    sys.path.insert(0, str(ROOT / "src"))
    from meshgate._node._core import RELOADABLE
    from meshgate.config import GatewayConfig, Permissions, User

    source = SOURCE.read_text()
    out = [
        "# Configuration keys",
        "",
        "<!-- Generated by tools/config_reference.py from src/meshgate/config.py: do not edit;",
        "     run `python tools/config_reference.py` after changing a field. -->",
        "",
        "Every key of a `meshgate serve` TOML file, which is also a keyword of",
        "`meshgate.GatewayConfig` in Python (same name, same meaning).  Durations are",
        "seconds, sizes bytes.  Fields with *yes* under *Reload* change on a running node",
        "when it gets SIGHUP (`Gateway.reconfigure`); a change to any other is logged as",
        "needing a restart.  How values are checked, and how errors read, is in",
        "[Configuration](configuration.md); `examples/node.toml` is a worked example.",
        "",
    ]
    out += _section(
        GatewayConfig, source, RELOADABLE, "Top-level keys of the TOML file (one node)."
    )
    out += _section(User, source, frozenset(), "Each `[[users]]` entry.")
    out += _section(
        Permissions,
        source,
        frozenset(),
        "The `publish` and `subscribe` tables of a user (`allow` and `deny` are lists of "
        "subject patterns; a subject is permitted if it matches an allow pattern and no "
        "deny pattern; `allow_responses` lets the user publish replies to requests).",
    )
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python tools/config_reference.py")
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
