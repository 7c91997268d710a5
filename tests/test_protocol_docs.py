"""docs/protocol.md must list every opcode with the legality rules the code enforces, and
every game message with its fields, their kinds and limits, and its direction."""

from __future__ import annotations

from pathlib import Path

from meshgate import ErrorCode
from meshgate.protocol import FRAME_TYPES, LEGAL_RECEIVE, ConnectionKind
from meshgate.protocol.game import GAME_SUBJECTS, FieldKind, GameMessage, MarkerKind, fields_of

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()


def test_every_opcode_row_matches_code() -> None:
    rows = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    assert set(rows) == {int(op) for op in FRAME_TYPES}
    for op, cls in FRAME_TYPES.items():
        _, name, typ, _, received, _ = rows[int(op)]
        assert name == f"`{op.name}`"
        assert typ == f"`{cls.__name__}`"
        legal = {k for k, ops in LEGAL_RECEIVE.items() if op in ops}
        if received == "every kind":
            assert legal == set(ConnectionKind)
        else:
            assert {ConnectionKind(k.strip(" `")) for k in received.split(",")} == legal


def test_every_error_code_is_documented() -> None:
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.name}` |" in DOC


def table(header: str) -> list[list[str]]:
    """The rows of the table whose header line starts with ``header``."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_every_game_field_kind_is_documented_with_its_limits() -> None:
    rows = table("| kind | wire type and limits |")
    assert rows == [[f"`{kind.name}`", kind.value] for kind in FieldKind]


def test_every_game_message_row_matches_code() -> None:
    """Subject, message type, fields in wire order with their kinds, and direction."""

    def payload(message: type[GameMessage]) -> str:
        fields = fields_of(message)
        if not fields:
            return "empty"
        return "`[{}]`".format(
            ", ".join(f"{n} {kind.name}{'?' if optional else ''}" for n, kind, optional in fields)
        )

    rows = table("| subject | message | payload | sent by | received by |")
    assert [row[:5] for row in rows] == [
        [f"`{s.subject}`", f"`{s.message.__name__}`", payload(s.message), s.sender, s.receivers]
        for s in GAME_SUBJECTS
    ]


def test_every_marker_is_documented() -> None:
    rows = table("| reply | marker | meaning |")
    assert [row[:2] for row in rows] == [
        [f"`{kind.value}<client>.<seq>`", f"`{kind.name}`"] for kind in MarkerKind
    ]
