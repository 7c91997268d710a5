"""Accounts, token auth, permissions, TLS, and secrets staying out of logs and statistics."""

from __future__ import annotations

import logging
import ssl
from collections import Counter

import pytest
import trio
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

import meshgate
from meshgate import ErrorCode, Permissions, User
from meshgate.subjects import match
from meshgate.testing.strategies import patterns, subjects

from .helpers import LISTENS, collect, config, raw

TOKENS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "carol": "carol-secret-3"}
USERS = (
    User(token=TOKENS["alice"], account="A", name="alice"),
    User(token=TOKENS["bob"], account="B", name="bob"),
    User(token=TOKENS["carol"], account="A", name="carol"),
)
SMALL = ("a", "b")


@pytest.mark.parametrize("listen", LISTENS)
async def test_bad_or_missing_token_is_refused(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, users=USERS)) as gw:
            assert gw.client_url
            for token in (None, "wrong-token-123"):
                with pytest.raises(meshgate.ConnectionClosedError) as info:
                    async with meshgate.connect(gw.client_url, token=token):
                        pass
                assert info.value.error is not None
                assert info.value.error.code == ErrorCode.AUTH_FAILED
            async with meshgate.connect(gw.client_url, token=TOKENS["alice"]) as ok:
                await ok.flush()
            assert gw.statistics().auth_failures == 2


@pytest.mark.parametrize("listen", LISTENS)
async def test_permissions_deny_with_error_and_connection_stays(listen: str) -> None:
    user = User(
        token="restricted-token",
        account="A",
        publish=Permissions(allow=("game.>",), deny=("game.admin.>",)),
        subscribe=Permissions(allow=("game.*.pos",)),
    )
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, users=(user, *USERS))) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url, token="restricted-token") as r,
                meshgate.connect(gw.client_url, token=TOKENS["alice"]) as watcher,
                watcher.subscribe(">") as everything,
            ):
                await watcher.flush()
                await r.publish("game.admin.kick", b"no")
                await r.publish("chat", b"no")
                await r.publish("game.1.pos", b"yes")
                async with r.subscribe("game.>") as broad:  # broader than allowed
                    with pytest.raises(meshgate.PermissionDeniedError) as denied:
                        await r.flush()  # raises the first refusal since the last flush
                    assert "game.admin.kick" in denied.value.reason
                    with pytest.raises(meshgate.PermissionDeniedError) as ended:
                        await broad.receive()  # refused: over, not waiting forever
                    assert ended.value.sid == broad.sid
                    assert ended.value.code == ErrorCode.PERMISSION_DENIED
                async with r.subscribe("game.1.pos") as allowed:
                    await r.flush()
                    await watcher.publish("game.1.pos", b"to-r")
                    assert (await allowed.receive()).payload == b"to-r"
                assert not r.is_closed
                assert [e.code for e in r.errors] == [ErrorCode.PERMISSION_DENIED] * 3
                assert "game.admin.kick" in r.errors[0].reason
                got = await collect(everything, 2)
                assert [m.payload for m in got] == [b"yes", b"to-r"]
                assert gw.statistics().permission_violations == 3


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["alice", "bob", "carol"]),
            st.booleans(),
            patterns(max_tokens=2, alphabet=SMALL),
            subjects(max_tokens=2, alphabet=SMALL),
        ),
        min_size=1,
        max_size=25,
    )
)
async def test_nothing_crosses_accounts(ops: list[tuple[str, bool, str, str]]) -> None:
    """Random subscriptions and publishes by users of two accounts on one node: every
    delivery stays inside the publisher's account, and statistics are per account."""
    account_of = {"alice": "A", "bob": "B", "carol": "A"}
    with trio.fail_after(20):
        async with meshgate.open_gateway(config("memory://", users=USERS)) as gw:
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url, token=TOKENS["alice"]) as alice,
                meshgate.connect(gw.client_url, token=TOKENS["bob"]) as bob,
                meshgate.connect(gw.client_url, token=TOKENS["carol"]) as carol,
            ):
                clients = {"alice": alice, "bob": bob, "carol": carol}
                subs: list[tuple[str, str, meshgate.Subscription, int]] = []
                published: list[tuple[str, str, bytes]] = []
                for n, (who, is_sub, pattern, subject) in enumerate(ops):
                    c = clients[who]
                    if is_sub:
                        sub = await c.add_subscription(pattern, max_buffered=10_000)
                        subs.append((who, pattern, sub, len(published)))
                        await c.flush()
                    else:
                        payload = f"{who}:{n}".encode()
                        await c.publish(subject, payload)
                        await c.flush()
                        published.append((account_of[who], subject, payload))
                for c in clients.values():
                    await c.flush()
                for who, pattern, sub, since in subs:
                    got = Counter()
                    while True:
                        try:
                            m = sub.receive_nowait()
                        except trio.WouldBlock:
                            break
                        got[(m.subject, m.payload)] += 1
                    want = Counter(
                        (s, p)
                        for acct, s, p in published[since:]
                        if acct == account_of[who] and match(pattern, s)
                    )
                    assert got == want
                for acct in ("A", "B"):
                    st_ = gw.account_statistics(acct)
                    assert st_.messages_in == sum(1 for a, _, _ in published if a == acct)
                    assert st_.subscriptions == sum(
                        1 for w, _, _, _ in subs if account_of[w] == acct
                    )


async def test_secrets_never_in_logs_repr_or_statistics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="meshgate")
    cfg = config("memory://", users=USERS)
    assert TOKENS["alice"] not in repr(cfg)
    with trio.fail_after(10):
        async with meshgate.open_gateway(cfg) as gw:
            assert gw.client_url
            async with meshgate.connect(gw.client_url, token=TOKENS["alice"]) as c:
                await c.flush()
            with pytest.raises(meshgate.ConnectionClosedError):
                async with meshgate.connect(gw.client_url, token="guess-guess-guess"):
                    pass
            dumped = repr(gw.statistics()) + repr(gw.gatewayz()) + repr(gw.account_statistics("A"))
    text = caplog.text + dumped
    for secret in [*TOKENS.values(), "guess-guess-guess"]:
        assert secret not in text


async def test_tls_client_listener() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with trio.fail_after(10):
        async with meshgate.open_gateway(config("tls://127.0.0.1:0", tls=server_ctx)) as gw:
            assert gw.client_url is not None
            assert gw.client_url.startswith("tls://")
            async with (
                meshgate.connect(gw.client_url, ssl_context=client_ctx) as a,
                meshgate.connect(gw.client_url, ssl_context=client_ctx) as b,
                b.subscribe("secure.>") as sub,
            ):
                await b.flush()
                await a.publish("secure.x", b"encrypted")
                assert (await sub.receive()).payload == b"encrypted"
            # a client that does not trust the certificate cannot connect
            with pytest.raises(meshgate.ConnectionClosedError, match="CERTIFICATE_VERIFY_FAILED"):
                async with meshgate.connect(gw.client_url):
                    pass
            # plain msgpack on the TLS port is refused without harming the node
            host, port = gw.client_url.removeprefix("tls://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"\x91\x05")
            await stream.aclose()
            async with meshgate.connect(gw.client_url, ssl_context=client_ctx) as again:
                await again.flush()


@pytest.mark.parametrize("listen", LISTENS)
async def test_raw_unknown_token_counts_only_once(listen: str) -> None:
    with trio.fail_after(10):
        async with meshgate.open_gateway(config(listen, users=USERS)) as gw:
            assert gw.client_url
            async with raw(gw.client_url) as r:
                await r.hello(token="nope-nope-nope")
                err = await r.error_and_close()
            assert err.code == ErrorCode.AUTH_FAILED
            assert "nope" not in err.reason
            assert gw.statistics().auth_failures == 1
