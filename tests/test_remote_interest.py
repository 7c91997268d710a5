"""The per-remote interest state machine: receiver and sender driven together."""

from __future__ import annotations

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshgate.interest import InboundInterest, InterestGraph, InterestMode, OutboundInterest
from meshgate.protocol import (
    AccountInterest,
    AccountNoInterest,
    Frame,
    GatewaySub,
    InterestModeEnd,
    InterestModeStart,
    NoInterest,
)
from meshgate.subjects import match
from meshgate.testing.strategies import patterns, subjects

SMALL = ("a", "b", "c")
ACCOUNTS = ("A", "B")


def pair(
    threshold: int = 1000, interest_only: bool = False
) -> tuple[InterestGraph[int], InboundInterest, OutboundInterest]:
    g: InterestGraph[int] = InterestGraph()
    return (
        g,
        InboundInterest(g, threshold=threshold, interest_only=interest_only),
        OutboundInterest(interest_only=interest_only),
    )


def deliver(out: OutboundInterest, frames: list[Frame]) -> None:
    for f in frames:
        out.receive(f)


def test_no_interest_sent_once_and_cancelled_by_wildcard() -> None:
    g, inb, out = pair()
    g.add("A", "other", 1)
    assert inb.on_unwanted("A", "x.1") == [NoInterest("A", "x.1")]
    assert inb.on_unwanted("A", "x.1") == []
    deliver(out, [NoInterest("A", "x.1")])
    deliver(out, inb.on_unwanted("A", "x.2"))
    assert not out.should_forward("A", "x.1")
    assert not out.should_forward("A", "x.2")
    assert out.should_forward("A", "y")
    g.add("A", "x.*", 2)
    frames = inb.on_interest_added("A", "x.*", None)
    assert frames == [GatewaySub("A", "x.*", None)]  # one frame cancels both literals
    deliver(out, frames)
    assert out.should_forward("A", "x.1")
    assert out.should_forward("A", "x.2")
    assert out.no_interest_count("A") == 0


def test_switch_at_threshold_dumps_interest() -> None:
    g, inb, out = pair(threshold=3)
    g.add("A", "keep.>", 1)
    for i in range(3):
        deliver(out, inb.on_unwanted("A", f"n.{i}"))
    assert out.no_interest_count("A") == 3
    frames = inb.on_unwanted("A", "n.3")
    assert frames == [
        InterestModeStart("A"),
        GatewaySub("A", "keep.>", None),
        InterestModeEnd("A"),
    ]
    out.receive(frames[0])
    assert out.mode("A") is InterestMode.TRANSITIONING
    assert not out.should_forward("A", "n.0")  # still optimistic with its no-interest set
    assert out.should_forward("A", "zzz")
    deliver(out, frames[1:])
    assert out.mode("A") is InterestMode.INTEREST_ONLY
    assert inb.mode("A") is InterestMode.INTEREST_ONLY
    assert not out.should_forward("A", "zzz")
    assert out.should_forward("A", "keep.x")
    # other accounts are unaffected
    assert out.mode("B") is InterestMode.OPTIMISTIC
    assert out.should_forward("B", "zzz")


def test_account_no_interest_trap_does_not_silence_account() -> None:
    """research §10 E6: A- under interest-only must not silence the account."""
    g, inb, out = pair(threshold=1)
    g.add("A", "seed", 1)
    deliver(out, inb.on_unwanted("A", "u.1"))
    deliver(out, inb.on_unwanted("A", "u.2"))  # switches
    assert out.mode("A") is InterestMode.INTEREST_ONLY
    g.remove("A", "seed", 1)
    deliver(out, inb.on_interest_removed("A", "seed", None))
    # the account now has zero subscriptions; a late message arrives
    frames = inb.on_unwanted("A", "foo")
    assert frames == []  # never an account-level "no" under interest-only
    # even a hostile or old peer's A- / A+ cannot silence it on the sender
    out.receive(AccountNoInterest("A"))
    out.receive(AccountInterest("A"))
    g.add("A", "bar", 2)
    deliver(out, inb.on_interest_added("A", "bar", None))
    assert out.should_forward("A", "bar")


def test_account_no_interest_in_optimistic_mode() -> None:
    g, inb, out = pair()
    assert inb.on_unwanted("A", "x") == [AccountNoInterest("A")]
    deliver(out, [AccountNoInterest("A")])
    assert not out.should_forward("A", "anything")
    g.add("A", "q.>", 1, queue="w")
    frames = inb.on_interest_added("A", "q.>", "w")
    assert frames == [GatewaySub("A", "q.>", "w")]  # the account stays "no" for plain
    deliver(out, frames)
    assert not out.should_forward("A", "q.1")
    assert out.queue_groups("A", "q.1") == ("w",)
    g.add("A", "p", 2)
    frames = inb.on_interest_added("A", "p", None)
    assert frames == [AccountInterest("A")]
    deliver(out, frames)
    assert out.should_forward("A", "p")


def test_forced_interest_only_from_connect() -> None:
    g, inb, out = pair(interest_only=True)
    g.add("A", "a.*", 1)
    g.add("A", "q", 2, queue="w")
    deliver(out, inb.start())
    assert out.should_forward("A", "a.b")
    assert not out.should_forward("A", "b")
    assert not out.should_forward("C", "a.b")  # unknown account: nothing wanted
    assert out.queue_groups("A", "q") == ("w",)


class InterestPair(RuleBasedStateMachine):
    """Receiver and sender joined by an in-order channel; frames delivered at the harness's pace.

    After every frame is delivered: in interest-only mode the sender forwards
    exactly what the receiver wants; in every mode it never withholds a
    subject the receiver has plain interest in; queue groups always agree.
    """

    def __init__(self) -> None:
        super().__init__()
        self.g: InterestGraph[int] = InterestGraph()
        self.inb = InboundInterest(self.g, threshold=2)
        self.out = OutboundInterest()
        self.wire: list[Frame] = []
        self.subs: list[tuple[str, str, str | None, int]] = []
        self.next_id = 0
        self.probes: set[tuple[str, str]] = set()

    @rule(
        account=st.sampled_from(ACCOUNTS),
        p=patterns(max_tokens=3, alphabet=SMALL),
        q=st.sampled_from([None, None, None, "w"]),
    )
    def subscribe(self, account: str, p: str, q: str | None) -> None:
        sid = self.next_id
        self.next_id += 1
        self.subs.append((account, p, q, sid))
        if self.g.add(account, p, sid, q):
            self.wire += self.inb.on_interest_added(account, p, q)

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        account, p, q, sid = data.draw(st.sampled_from(self.subs))
        self.subs.remove((account, p, q, sid))
        if self.g.remove(account, p, sid, q):
            self.wire += self.inb.on_interest_removed(account, p, q)

    @rule(account=st.sampled_from(ACCOUNTS), s=subjects(max_tokens=3, alphabet=SMALL))
    def publish(self, account: str, s: str) -> None:
        """The sender publishes; if it forwards and nobody wants it, the receiver says so."""
        self.probes.add((account, s))
        if self.out.should_forward(account, s) and not self.g.has_plain_interest(account, s):
            self.wire += self.inb.on_unwanted(account, s)

    @precondition(lambda self: self.wire)
    @rule(n=st.integers(1, 5))
    def deliver_some(self, n: int) -> None:
        for f in self.wire[:n]:
            self.out.receive(f)
        del self.wire[:n]

    def wants(self, account: str, s: str) -> bool:
        return any(a == account and q is None and match(p, s) for a, p, q, _ in self.subs)

    @invariant()
    def converged_views_agree(self) -> None:
        if self.wire:
            return
        for account in ACCOUNTS:
            for a, s in self.probes:
                if a != account:
                    continue
                want = self.wants(account, s)
                fwd = self.out.should_forward(account, s)
                if want:
                    assert fwd, (account, s)
                if self.out.mode(account) is InterestMode.INTEREST_ONLY:
                    assert fwd == want, (account, s)
                want_q = {q for a2, p, q, _ in self.subs if a2 == account and q and match(p, s)}
                assert set(self.out.queue_groups(account, s)) == want_q
            assert self.out.mode(account) is self.inb.mode(account)
            if self.out.mode(account) is InterestMode.INTEREST_ONLY:
                event("reached interest-only")


TestInterestPair = InterestPair.TestCase
