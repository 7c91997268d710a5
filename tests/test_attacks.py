"""The attacks of the trust-boundary review, replayed over real TCP sockets.

Each is refused (with an error frame where the protocol has one), counted, and
changes nothing for anyone else.
"""

from __future__ import annotations

import msgpack
import pytest
import trio

import meshgate
from meshgate import ErrorCode, Permissions, User
from meshgate.protocol import PROTOCOL_VERSION, GatewayMessage, Hello, RouteMessage
from meshgate.replicant import InMemoryReplicant
from meshgate.spatial import Grid

from .helpers import Raw, drain

ROUTE_SECRET = "attack-test-route-secret"
GW_SECRET = "attack-test-gateway-secret"
BANK = User(token="bank-client-token", account="bank")
PLAYER = User(
    token="player-token-0001",
    account="bank",
    publish=Permissions(deny=("admin.>",)),
)
OWNER = User(token="owner-replicant-token", account="bank", replicant=True)


def bank_node(name: str, **kw: object) -> meshgate.GatewayConfig:
    fields: dict[str, object] = {
        "name": name,
        "cluster": "A",
        "listen": "127.0.0.1:0",
        "cluster_listen": "127.0.0.1:0",
        "gateway_listen": "127.0.0.1:0",
        "users": (BANK, PLAYER, OWNER),
        "cluster_secret": ROUTE_SECRET,
        "gateway_secrets": {"B": GW_SECRET},
        "replicants": True,
        "reconnect_wait": 0.05,
        **kw,
    }
    return meshgate.GatewayConfig(**fields)  # type: ignore[arg-type]


async def raw_peer(url: str, hello: Hello, *frames: object) -> list[object]:
    """Dial ``url``, send ``hello`` and ``frames``; everything received until the close."""
    async with meshgate.transports.connect_stream(url) as stream:
        r = Raw(stream)
        await r.send(hello, *frames)  # type: ignore[arg-type]
        return await r.until_closed()  # type: ignore[return-value]


async def test_uncredentialed_route_and_gateway_peers_get_nothing_and_inject_nothing() -> None:
    with trio.fail_after(30):
        async with meshgate.open_gateway(bank_node("a0")) as a0:
            assert a0.cluster_url
            assert a0.gateway_url
            assert a0.client_url
            async with meshgate.open_gateway(bank_node("a1", routes=(a0.cluster_url,))) as a1:
                await a0.wait_routes(1)
                async with (
                    meshgate.connect(a0.client_url, token=BANK.token) as victim,
                    victim.subscribe(">") as everything,
                ):
                    await victim.flush()
                    # 1. a raw socket claiming to be route a1 of cluster A
                    route_hello = Hello(
                        version=PROTOCOL_VERSION, role="route", name="a1", cluster="A"
                    )
                    got = await raw_peer(
                        a0.cluster_url,
                        route_hello,
                        RouteMessage(None, "bank", "pay.attacker", None, b"1000"),
                    )
                    assert [type(f).__name__ for f in got] == ["Error"]
                    assert got[0].code == ErrorCode.AUTH_FAILED  # type: ignore[attr-defined]
                    # 2. a gateway claiming to be cluster B, offering a URL to exfiltrate to
                    gw_hello = Hello(
                        version=PROTOCOL_VERSION,
                        role="gateway",
                        name="b0",
                        cluster="B",
                        urls=("tcp://127.0.0.1:9",),
                    )
                    got = await raw_peer(
                        a0.gateway_url,
                        gw_hello,
                        GatewayMessage(None, "bank", "pay.attacker", None, b"1000"),
                    )
                    assert [type(f).__name__ for f in got] == ["Error"]
                    await victim.flush()
                    assert drain(everything) == []
                    assert a0.statistics().auth_failures == 2
                    assert "B" not in a0.gatewayz()["known_urls"]
                    # the real route was not displaced
                    assert [r.remote_name for r in a0.routez()] == ["a1"]
                    assert a1.statistics().routes == 1


async def test_players_cannot_touch_authority_or_side_step_deny_lists() -> None:
    grid = Grid(100.0)
    with trio.fail_after(30):
        async with meshgate.open_gateway(bank_node("a0")) as gw:
            owner = InMemoryReplicant("west", grid, {"ship1": (5.0, 5.0)})
            gw.attach_replicant(owner, token=OWNER.token)
            await owner.wait_ready()
            assert gw.client_url
            async with (
                meshgate.connect(gw.client_url, token=PLAYER.token) as cheat,
                meshgate.connect(gw.client_url, token=BANK.token) as admin,
                admin.subscribe("admin.>") as admin_inbox,
            ):
                # 3. claim the ship, orphan the owner, read its inputs, forge a correction
                for subject, fields in [
                    ("$AUTH.claim", ("ship1", "cheat", 99)),
                    ("$AUTH.lost", ("west",)),
                    ("$SPEC.correct", ("a0/1", 0, b"x")),
                ]:
                    await cheat.publish(subject, msgpack.packb(fields))
                async with cheat.subscribe("$REP.west.in") as spy:
                    with pytest.raises(meshgate.PermissionDeniedError):
                        await cheat.flush()
                    with pytest.raises(meshgate.PermissionDeniedError):
                        await spy.receive()  # refused, and over
                # 4. the _GR_ envelope around a denied subject, and around $AUTH.claim
                await cheat.publish("_GR_.A.a0.admin.kick", b"")
                await cheat.publish("_GR_.A.a0.$AUTH.claim", msgpack.packb(("ship1", "x", 100)))
                with pytest.raises(meshgate.PermissionDeniedError):
                    await cheat.flush()
                await admin.flush()
                codes = [e.code for e in cheat.errors]
                assert codes.count(ErrorCode.PERMISSION_DENIED) == 5
                assert not cheat.is_closed
                assert drain(admin_inbox) == []
                game = gw.game()
                assert game is not None
                assert [(e.entity, e.owner, e.epoch) for e in game.entities] == [
                    ("ship1", "west", 1)
                ]
                # the real game goes on: the player's input reaches the real owner
                await cheat.send_input("ship1", 0, b"thrust")
                async with admin.subscribe("cell.>") as view:
                    await admin.flush()
                    await cheat.send_input("ship1", 1, b"!")
                    while (await view.receive()).payload != b"thrust!":
                        pass  # earlier states of the ship
                assert [seq for _, seq in owner.log["ship1"]] == [0, 1]
