from __future__ import annotations

from collections import Counter

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshgate.interest import InterestGraph, SubscriptionIndex
from meshgate.subjects import match
from meshgate.testing.strategies import patterns, subjects

SMALL = ("a", "b", "c")


def test_refcount_transitions_and_queue_grouping() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    assert idx.add("ship.*.pos", "s1") is True
    assert idx.add("ship.*.pos", "s2") is False
    assert idx.add("ship.*.pos", "s2") is False  # same subscription twice: no-op
    assert idx.count("ship.*.pos") == 2
    assert idx.add("ship.1.pos", "q1", queue="workers") is True
    assert idx.add("ship.>", "q2", queue="workers") is True  # a distinct key
    assert idx.count("ship.>", "workers") == 1
    m = idx.match("ship.1.pos")
    assert sorted(m.plain) == ["s1", "s2"]
    assert len(m.queues) == 1
    q, members = m.queues[0]
    assert q == "workers"
    assert sorted(members) == ["q1", "q2"]  # one group across patterns
    assert idx.remove("ship.*.pos", "s1") is False
    assert idx.remove("ship.*.pos", "s2") is True
    assert idx.remove("ship.*.pos", "s2") is False
    assert idx.match("ship.1.pos").plain == ()
    assert idx.remove("ship.1.pos", "q1", queue="workers") is True
    assert idx.remove("ship.>", "q2", queue="workers") is True
    assert len(idx) == 0
    assert not idx.match("ship.1.pos")
    assert idx.num_keys == 0
    assert idx.num_nodes == 1  # pruned down to the root


def test_cache_is_bounded_and_counted() -> None:
    idx: SubscriptionIndex[int] = SubscriptionIndex(cache_size=4)
    idx.add("a.>", 1)
    for i in range(10):
        assert idx.match(f"a.{i}").plain == (1,)
    assert idx.cache_len == 4
    assert idx.match("a.9").plain == (1,)
    assert idx.cache_hits == 1
    assert idx.cache_misses == 10


def test_graph_isolates_accounts() -> None:
    g: InterestGraph[str] = InterestGraph()
    g.add("A", "x.>", "a1")
    g.add("B", "x.>", "b1")
    ma = g.match("A", "x.y")
    assert ma is not None
    assert ma.plain == ("a1",)
    g.remove("A", "x.>", "a1")
    assert g.match("A", "x.y") is None
    assert g.accounts() == ["B"]


class IndexVersusModel(RuleBasedStateMachine):
    """The trie with a tiny cache against a list scan, under random insert/remove/match."""

    def __init__(self) -> None:
        super().__init__()
        self.idx: SubscriptionIndex[int] = SubscriptionIndex(cache_size=3)
        self.model: list[tuple[str, str | None, int]] = []
        self.next_id = 0

    @rule(p=patterns(max_tokens=3, alphabet=SMALL), q=st.sampled_from([None, None, "g1", "g2"]))
    def add(self, p: str, q: str | None) -> None:
        sid = self.next_id
        self.next_id += 1
        before = sum(1 for (mp, mq, _) in self.model if (mp, mq) == (p, q))
        went = self.idx.add(p, sid, q)
        self.model.append((p, q, sid))
        assert went is (before == 0)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        p, q, sid = data.draw(st.sampled_from(self.model))
        self.model.remove((p, q, sid))
        after = sum(1 for (mp, mq, _) in self.model if (mp, mq) == (p, q))
        assert self.idx.remove(p, sid, q) is (after == 0)

    @rule(s=subjects(max_tokens=4, alphabet=SMALL))
    def lookup(self, s: str) -> None:
        m = self.idx.match(s)
        want_plain = Counter(sid for (p, q, sid) in self.model if q is None and match(p, s))
        assert Counter(m.plain) == want_plain
        want_q: dict[str, Counter[int]] = {}
        for p, q, sid in self.model:
            if q is not None and match(p, s):
                want_q.setdefault(q, Counter())[sid] += 1
        assert {q: Counter(members) for q, members in m.queues} == want_q

    @invariant()
    def sizes_agree(self) -> None:
        assert len(self.idx) == len(self.model)
        assert self.idx.num_keys == len({(p, q) for (p, q, _) in self.model})
        assert self.idx.cache_len <= 3


TestIndexVersusModel = IndexVersusModel.TestCase
