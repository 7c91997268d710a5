"""The per-client scheduler inside the node core (issue 21): a client with a budget gets
its keyed state through the send tick within its budget, newest value per key; reliable
messages go straight out, in order; clients without a budget are untouched."""

from __future__ import annotations

import attrs
import msgpack

from meshgate import User
from meshgate.protocol import ConnectionKind, Message, Publish, Subscribe, Unsubscribe
from meshgate.spatial import Grid, Rings
from meshgate.testing import CoreHarness, CorePeer

from .helpers import node_config, open_clients, open_peer


def _setup(budget: int, **config: object) -> tuple[CoreHarness, CorePeer, CorePeer, CorePeer]:
    """A publisher and a client without a budget, and a client whose user has one."""
    users = (
        User(token="plain-token", name="plain"),
        User(token="budget-token", name="budgeted", client_bandwidth=budget),
    )
    h = CoreHarness(node_config(users=users, trusted_network=True, **config))
    pub, budgeted, plain = open_clients(
        h, "plain-token", "budget-token", "plain-token", subscribe="cell.>"
    )
    return h, pub, budgeted, plain


def test_budgeted_client_gets_newest_values_within_budget() -> None:
    h, pub, budgeted, plain = _setup(20_000, send_interval=0.05)
    payload = b"x" * 100
    sent_total = 0
    seen: dict[str, int] = {}
    plain_frames = 0
    for step in range(40):  # 2 s: 50 keys at 20 Hz, about 6x the budget
        for k in range(50):
            pub.send(Publish(f"cell.0.0.ship.{k}", None, payload + bytes([step]), key=f"s{k}"))
        pub.send(Publish("cell.0.0.event", None, b"boom%d" % step))  # reliable
        h.tick(h.now + 0.05)
        plain_frames += len(_decode(plain.take_bytes()))
        data = budgeted.take_bytes()
        sent_total += len(data)
        events = []
        dec_frames = _decode(data)
        for f in dec_frames:
            assert isinstance(f, Message)
            if f.subject == "cell.0.0.event":
                events.append(f.payload)
            else:
                step_of = f.payload[-1]
                # newest value only: never older than what this key had
                assert step_of >= seen.get(f.subject, -1)
                assert step_of == step  # the pending value is always the latest
                seen[f.subject] = step_of
        assert events == [b"boom%d" % step]  # reliable: every one, in order
    # within the budget (plus one message of slack per second)
    assert sent_total <= 20_000 * 2 + 200
    assert sent_total >= 20_000 * 2 * 0.8
    assert len(seen) == 50  # nobody starved
    # the client without a budget got everything
    assert plain_frames == 40 * 51
    st = h.core.statistics()
    assert st.scheduled_clients == 1
    assert st.scheduled_superseded > 0


def test_rings_cap_far_keys() -> None:
    h, pub, budgeted, _ = _setup(1_000_000, send_interval=0.05)
    rings = Rings(Grid(10.0), ((50.0, 0.0, 4.0), (200.0, 5.0, 2.0), (float("inf"), 1.0, 1.0)))
    h.core.set_relevance(rings.relevance)
    assert h.core.set_focus(budgeted.conn_id, 5.0, 5.0)
    counts = {"near": 0, "mid": 0, "far": 0}
    cells = {"near": "cell.0.0", "mid": "cell.10.0", "far": "cell.100.0"}
    for step in range(40):
        for name, cell in cells.items():
            pub.send(Publish(f"{cell}.{name}", None, bytes([step]), key=name))
        h.tick(h.now + 0.05)
        for f in _decode(budgeted.take_bytes()):
            assert isinstance(f, Message)
            counts[f.subject.rsplit(".", 1)[1]] += 1
    assert counts["near"] == 40  # full rate
    assert 9 <= counts["mid"] <= 11  # 5 Hz over 2 s
    assert 2 <= counts["far"] <= 3  # 1 Hz


def test_unsubscribed_keys_are_forgotten() -> None:
    h, pub, budgeted, _ = _setup(100, send_interval=0.05)
    for k in range(20):
        pub.send(Publish(f"cell.0.0.s{k}", None, b"y" * 50, key=f"s{k}"))
    budgeted.send(Unsubscribe(1, None))
    for _ in range(40):
        h.tick(h.now + 0.05)
    assert not [f for f in _decode(budgeted.take_bytes()) if isinstance(f, Message)]
    assert h.core.statistics().scheduled_pending_keys == 0


def _decode(data: bytes) -> list[object]:
    from meshgate.protocol import Decoder

    d = Decoder(max_frame_bytes=1 << 24)
    d.feed(data)
    return list(d)


def test_a_reload_gives_connected_clients_their_budget() -> None:
    """A node started without budgets has no send tick; a reload that gives a user a
    budget turns it on and gives that user's connected clients a scheduler: their keyed
    state waits for the send tick."""
    users = (User(token="plain-token", name="plain"),)
    cfg = node_config(users=users, trusted_network=True)
    h = CoreHarness(cfg)
    assert h.core.send_interval is None
    sub = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    sub.hello(token="plain-token")
    sub.received()
    sub.send(Subscribe(1, "cell.>", None))
    sub.received()
    new = (User(token="plain-token", name="plain", client_bandwidth=100),)
    h.core.reconfigure(attrs.evolve(cfg, users=new))
    assert h.core.send_interval == cfg.send_interval
    assert h.core.statistics().scheduled_clients == 1
    sub.send(Publish("cell.0.0.a", None, b"v", key="a"))
    assert not [f for f in _decode(sub.take_bytes()) if isinstance(f, Message)]
    h.tick(h.now + cfg.send_interval)
    (m,) = [f for f in _decode(sub.take_bytes()) if isinstance(f, Message)]
    assert m.payload == b"v"


def test_budgeted_client_with_datagrams_gets_keyed_state_as_datagrams() -> None:
    """A budget and a datagram-capable transport (QUIC) compose: the send tick decides
    what goes and when, the datagram lane carries it (every refresh-th value of a key on
    the stream), reliable messages stay on the stream, and the budget counts both."""
    users = (
        User(token="plain-token", name="plain"),
        User(token="budget-token", name="budgeted", client_bandwidth=20_000),
    )
    h = CoreHarness(
        node_config(users=users, trusted_network=True, send_interval=0.05, datagram_refresh=8)
    )
    pub = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    pub.hello(token="plain-token")
    client = open_peer(h, ConnectionKind.CLIENT, handshake=False)
    client.enable_datagrams(1200)
    client.hello(token="budget-token")
    client.received()
    client.send(Subscribe(1, "cell.>", None))
    client.received()
    payload = b"x" * 100
    total = 0
    kseqs: dict[str, int] = {}
    on_stream = 0
    datagrams = 0
    for step in range(40):  # 2 s: 50 keys at 20 Hz, about 6x the budget
        for k in range(50):
            pub.send(Publish(f"cell.0.0.ship.{k}", None, payload + bytes([step]), key=f"s{k}"))
        pub.send(Publish("cell.0.0.event", None, b"boom%d" % step))
        h.tick(h.now + 0.05)
        taken = client.take_datagrams()
        data = client.take_bytes()
        total += len(data) + sum(map(len, taken))
        events = []
        keyed: list[tuple[str, int, int]] = []  # (key, kseq, step) in arrival order
        for d in taken:
            kind, sid, _subject, _reply, body, kseq, key = msgpack.unpackb(d)
            assert (kind, sid) == (4, 1)
            keyed.append((key, kseq, body[-1]))
            datagrams += 1
        for raw in _raw_frames(data):
            if raw[2] == "cell.0.0.event":
                events.append(raw[4])
            else:
                assert len(raw) == 7  # a refresh: the stream frame carries kseq and key
                keyed.append((raw[6], raw[5], raw[4][-1]))
                on_stream += 1
        assert events == [b"boom%d" % step]  # reliable: every one, in order
        for key, kseq, at in keyed:
            assert kseq > kseqs.get(key, 0)  # per key, newer only, across both lanes
            kseqs[key] = kseq
            assert at == step  # the latest value of the key
    assert datagrams > 4 * on_stream > 0  # mostly datagrams, some refreshes (1 in 8)
    # within the budget, datagrams included (plus one message of slack per second)
    assert 20_000 * 2 * 0.8 <= total <= 20_000 * 2 + 200
    assert len(kseqs) == 50  # nobody starved
    assert h.core.statistics().datagrams_out == datagrams


def _raw_frames(data: bytes) -> list[list[object]]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return [list(f) for f in unpacker]


def test_a_key_whose_entity_moves_away_is_rated_again() -> None:
    """A key's relevance is cached for RELEVANCE_TTL, then computed again from where its
    values are published now: keys whose entities fly far from the client fall to the
    far ring's rate cap, though their values never stop waiting."""
    h, pub, budgeted, _ = _setup(2_200, send_interval=0.05)  # about one value a tick
    rings = Rings(Grid(10.0), ((50.0, 0.0, 4.0), (200.0, 5.0, 2.0), (float("inf"), 1.0, 1.0)))
    h.core.set_relevance(rings.relevance)
    assert h.core.set_focus(budgeted.conn_id, 5.0, 5.0)

    def sent(cell: str, ticks: int) -> int:
        n = 0
        for step in range(ticks):
            for k in range(10):  # each key waits about 10 ticks: longer than the TTL
                pub.send(Publish(f"cell.{cell}.k{k}", None, b"x" * 80 + bytes([step]), key=f"k{k}"))
            h.tick(h.now + 0.05)
            n += sum(isinstance(f, Message) for f in _decode(budgeted.take_bytes()))
        return n

    near = sent("0.0", 40)  # 2 s, all ten keys at full rate: the budget is the limit
    assert near >= 30
    sent("90.90", 10)  # half a second 900 units away: every key is rated again
    far = sent("90.90", 40)  # 2 s in the 1 Hz ring: about ten keys x 2 s
    assert far <= 30, (near, far)
