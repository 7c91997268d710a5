"""Permissions cannot be side-stepped: routed replies, reply subjects, responses."""

from __future__ import annotations

import pytest

import meshgate
from meshgate.protocol import Message, Publish, Subscribe
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config


def user_node(**publish: object) -> tuple[CoreHarness, CorePeer, CorePeer]:
    users = (
        meshgate.User(
            token="limited-user-token",
            account="game",
            publish=meshgate.Permissions(**publish),  # type: ignore[arg-type]
        ),
        meshgate.User(token="watcher-token-0", account="game"),
    )
    h = CoreHarness(node_config(users=users, cluster_secret="route-secret-0123456789"))
    watcher = h.open()
    watcher.hello(token="watcher-token-0")
    watcher.send(Subscribe(1, ">"))
    limited = h.open()
    limited.hello(token="limited-user-token")
    watcher.received()
    limited.received()
    return h, limited, watcher


def delivered(peer: CorePeer) -> list[str]:
    return [f.subject for f in peer.received() if isinstance(f, Message)]


@pytest.mark.parametrize("subject", ["_GR_.A.a0.admin.kick", "_GR_.Z.z1.admin.kick"])
def test_deny_applies_to_the_unwrapped_routed_reply(subject: str) -> None:
    h, limited, watcher = user_node(deny=("admin.>",))
    limited.send(Publish(subject, None, b"kick"))
    assert [e.code for e in limited.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED]
    assert delivered(watcher) == []
    assert h.core.statistics().permission_violations == 1


def test_reply_subjects_need_permission_but_own_inboxes_do_not() -> None:
    _, limited, watcher = user_node(allow=("game.>",))
    limited.send(Publish("game.x", "admin.y", b""))
    assert [e.code for e in limited.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED]
    limited.send(Publish("game.x", "_INBOX.abc.1", b""), Publish("game.y", "game.r", b""))
    assert limited.errors() == []
    assert delivered(watcher) == ["game.x", "game.y"]


@pytest.mark.parametrize("allow_responses", [False, True])
def test_allow_responses_lets_a_user_answer_requests(allow_responses: bool) -> None:
    _, limited, watcher = user_node(allow=("game.>",), allow_responses=allow_responses)
    limited.send(Publish("_INBOX.abc.1", None, b"answer"), Publish("_GR_.B.b0._INBOX.x", None, b""))
    errors = limited.errors()
    if allow_responses:
        assert errors == []
        assert delivered(watcher) == ["_INBOX.abc.1"]  # the other goes to cluster B
    else:
        assert [e.code for e in errors] == [meshgate.ErrorCode.PERMISSION_DENIED] * 2
        assert delivered(watcher) == []


def test_deny_still_wins_over_allow_responses() -> None:
    _, limited, watcher = user_node(deny=("_INBOX.secret.>",), allow_responses=True)
    limited.send(Publish("_INBOX.secret.1", None, b""))
    assert [e.code for e in limited.errors()] == [meshgate.ErrorCode.PERMISSION_DENIED]
    assert delivered(watcher) == []
