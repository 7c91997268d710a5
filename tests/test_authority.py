"""Input follows authority: thousands of random hand-overs lose and duplicate nothing."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshgate.authority import Delivery, InputRouter

ENTITIES = ("e1", "e2")
CLIENTS = ("c1", "c2", "c3")
REPLICANTS = ("r1", "r2", "r3")


class Replicant:
    """A replicant applying inputs to entity states; its *durable* state is the last one
    it published (acknowledged); a crash rolls the entity back to that."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: list[Delivery] = []
        self.owned: dict[str, int] = {}  # entity -> epoch


class Handovers(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.router = InputRouter(max_pending=10_000)
        self.reps = {r: Replicant(r) for r in REPLICANTS}
        self.next_seq = dict.fromkeys(CLIENTS, 0)
        self.sent: dict[tuple[str, str], list[int]] = {}
        # the entity state that survives: applied inputs per (entity, client), in order
        self.state: dict[str, dict[str, list[int]]] = {e: {} for e in ENTITIES}
        # what the current owner has applied but not yet published (lost on a crash)
        self.unpublished: dict[str, dict[str, list[int]]] = {e: {} for e in ENTITIES}
        self.epoch = dict.fromkeys(ENTITIES, 0)

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            self.reps[d.replicant].inbox.append(d)

    def _owner(self, entity: str) -> str | None:
        return self.router.owner(entity)[0]

    def _applied(self, entity: str) -> dict[str, list[int]]:
        out = {c: list(s) for c, s in self.state[entity].items()}
        for c, s in self.unpublished[entity].items():
            out.setdefault(c, []).extend(s)
        return out

    @rule(client=st.sampled_from(CLIENTS), entity=st.sampled_from(ENTITIES))
    def client_input(self, client: str, entity: str) -> None:
        seq = self.next_seq[client]
        self.next_seq[client] += 1
        self.sent.setdefault((entity, client), []).append(seq)
        self._deliver(self.router.input(client, entity, seq, f"{client}:{seq}".encode()))

    @rule(client=st.sampled_from(CLIENTS), entity=st.sampled_from(ENTITIES))
    def client_retry(self, client: str, entity: str) -> None:
        """A client resends its last input (a reconnect): it must not apply twice."""
        sent = self.sent.get((entity, client))
        if sent:
            self._deliver(self.router.input(client, entity, sent[-1], b"retry"))

    @rule(rep=st.sampled_from(REPLICANTS), n=st.integers(1, 5))
    def apply(self, rep: str, n: int) -> None:
        r = self.reps[rep]
        for d in r.inbox[:n]:
            if r.owned.get(d.entity) != d.epoch:
                continue  # fenced: not (or no longer) the owner at this epoch
            done = self._applied(d.entity).get(d.client, [])
            if done and d.seq <= done[-1]:
                continue  # the state already includes it (redelivered after a takeover)
            self.unpublished[d.entity].setdefault(d.client, []).append(d.seq)
        del r.inbox[:n]

    @rule(entity=st.sampled_from(ENTITIES))
    def publish_state(self, entity: str) -> None:
        """The owner publishes its state: the applied numbers are acknowledged."""
        owner, epoch = self.router.owner(entity)
        if owner is None:
            return
        for c, seqs in self.unpublished[entity].items():
            self.state[entity].setdefault(c, []).extend(seqs)
        self.unpublished[entity] = {}
        applied = {c: s[-1] for c, s in self.state[entity].items() if s}
        self.router.ack(entity, owner, epoch, applied)

    @rule(entity=st.sampled_from(ENTITIES), to=st.sampled_from(REPLICANTS))
    def planned_move(self, entity: str, to: str) -> None:
        owner, epoch = self.router.owner(entity)
        if owner is not None:
            # the old owner stops after applying what it has, and hands its state over
            r = self.reps[owner]
            mine = [d for d in r.inbox if d.entity == entity]
            r.inbox = [d for d in r.inbox if d.entity != entity]
            for d in mine:
                done = self._applied(entity).get(d.client, [])
                if r.owned.get(entity) == d.epoch and not (done and d.seq <= done[-1]):
                    self.unpublished[entity].setdefault(d.client, []).append(d.seq)
            for c, seqs in self.unpublished[entity].items():
                self.state[entity].setdefault(c, []).extend(seqs)
            self.unpublished[entity] = {}
            del r.owned[entity]
            applied = {c: s[-1] for c, s in self.state[entity].items() if s}
            self.router.release(entity, owner, epoch, applied)
        self._claim(entity, to)

    def _claim(self, entity: str, to: str) -> None:
        self.epoch[entity] += 1
        self.reps[to].owned[entity] = self.epoch[entity]
        self._deliver(self.router.claim(entity, to, self.epoch[entity]))

    @rule(rep=st.sampled_from(REPLICANTS))
    def crash(self, rep: str) -> None:
        """The replicant dies: its unpublished work and its inbox are lost."""
        r = self.reps[rep]
        for entity in list(r.owned):
            self.unpublished[entity] = {}
        r.owned.clear()
        r.inbox.clear()
        self.router.owner_lost(rep)

    @rule(entity=st.sampled_from(ENTITIES), to=st.sampled_from(REPLICANTS))
    def takeover(self, entity: str, to: str) -> None:
        """A new owner's claim overtakes the old owner's release (they travel on
        different paths): the old owner's unpublished work is discarded with it."""
        owner, _ = self.router.owner(entity)
        if owner is None:
            return
        self.unpublished[entity] = {}
        self.reps[owner].owned.pop(entity, None)
        self._claim(entity, to)

    @rule(entity=st.sampled_from(ENTITIES), to=st.sampled_from(REPLICANTS))
    def adopt_orphan(self, entity: str, to: str) -> None:
        if self._owner(entity) is None:
            self._claim(entity, to)

    @invariant()
    def never_twice_never_out_of_order(self) -> None:
        for entity in ENTITIES:
            for client, seqs in self._applied(entity).items():
                assert seqs == sorted(set(seqs)), (entity, client, seqs)

    def teardown(self) -> None:
        # settle: every entity gets an owner, every inbox is applied and published
        for entity in ENTITIES:
            if self._owner(entity) is None:
                self._claim(entity, REPLICANTS[0])
        for r in self.reps.values():
            self.apply(r.name, len(r.inbox) + 1)
        for entity in ENTITIES:
            self.publish_state(entity)
            for (e, client), sent in self.sent.items():
                if e == entity:
                    # every input sent was applied exactly once, in order
                    assert self.state[entity].get(client, []) == sent, (entity, client)
            assert self.router.pending(entity) == 0


TestHandovers = Handovers.TestCase
TestHandovers.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def test_bounded_and_fenced() -> None:
    r = InputRouter(max_pending=2)
    assert r.input("c", "e", 0, b"a") == []  # no owner yet: held
    assert r.input("c", "e", 1, b"b") == []
    assert r.input("c", "e", 2, b"c") == []  # over the bound: refused, counted
    assert r.refused == 1
    out = r.claim("e", "r1", 1)
    assert r.claim("e", "r2", 1) == []  # stale: same epoch
    assert r.stale == 1
    assert [(d.seq, d.epoch) for d in out] == [(0, 1), (1, 1)]
    r.ack("e", "r2", 1, {"c": 1})  # not the owner: ignored
    assert r.pending("e") == 2
    r.ack("e", "r1", 1, {"c": 1})
    assert r.pending("e") == 0
    assert r.input("c", "e", 1, b"again") == []  # a retry
    assert r.duplicates == 1
