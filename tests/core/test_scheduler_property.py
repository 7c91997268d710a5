"""The per-client send scheduler alone (sans-IO, a fake clock), as a hypothesis state
machine (issue 21, "Property-tested"):

* over every window of one second that ends with keyed state sent, the bytes written
  (reliable included) never exceed the budget by more than one message;
* no key waits longer than a bound derived from its gain (relevance weight x publisher
  priority), the budget and the number of keys (no starvation), whatever priorities
  its values carry;
* per key, values are never delivered older-after-newer, nor more often than its rate
  cap (``min_interval``);
* reliable frames already in the output are never dropped or reordered;
* the scheduler's state stays within its bounds (keys, bytes), refusals counted.

Each property was checked against a planted bug once (see the report of issue 21):
priority by weight alone (no accumulation) starves the light keys; sending while the
bucket has credit but ignoring the one-second window breaks the window bound; a
superseded value kept and sent after the newer one breaks the order; clearing the
output before appending drops reliable frames.  With publisher priorities (issue 21,
part 2): a superseding value with another priority that restarted the key's wait
(``st.since = now``) starved the key, and the bound caught it.
"""

from __future__ import annotations

import struct

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from meshgate.protocol import MAX_PRIORITY, MIN_PRIORITY
from meshgate.testing import Scheduler

INTERVAL = 0.05
N_KEYS = 8
#: publisher priorities the machine gives (1.0: none); the bound scales with their ratio
PRIOS = (0.5, 1.0, 1.0, 2.0, 4.0)
_HEAD = struct.Struct("!IcHI")  # total length, kind, key index, sequence


def frame(kind: bytes, key: int, seq: int, size: int) -> bytes:
    size = max(size, _HEAD.size)
    return _HEAD.pack(size, kind, key, seq) + b"\0" * (size - _HEAD.size)


def parse(out: bytes) -> list[tuple[bytes, int, int, int]]:
    frames = []
    i = 0
    while i < len(out):
        size, kind, key, seq = _HEAD.unpack_from(out, i)
        frames.append((kind, key, seq, size))
        i += size
    assert i == len(out), "a frame was cut"
    return frames


class SchedulerMachine(RuleBasedStateMachine):
    """A model of one client: what was offered, what went out, when."""

    @initialize(
        budget=st.integers(2_000, 40_000),
        weights=st.lists(st.sampled_from([1.0, 2.0, 4.0]), min_size=N_KEYS, max_size=N_KEYS),
        caps=st.lists(st.sampled_from([0.0, 0.0, 0.2, 1.0]), min_size=N_KEYS, max_size=N_KEYS),
        max_keys=st.sampled_from([4, N_KEYS, 64]),
        prios=st.lists(st.sampled_from(PRIOS), min_size=N_KEYS, max_size=N_KEYS),
    )
    def setup(
        self,
        budget: int,
        weights: list[float],
        caps: list[float],
        max_keys: int,
        prios: list[float],
    ) -> None:
        self.now = 100.0
        self.budget = budget
        self.max_frame = max(_HEAD.size, int(budget * INTERVAL / 2))
        self.max_bytes = 64 * self.max_frame
        self.sched = Scheduler(budget, INTERVAL, max_keys, self.max_bytes, self.now)
        self.weights = weights
        self.caps = caps
        #: each key's publisher priority now (a rule changes it)
        self.prios = prios
        self.out = bytearray()
        self.reliable_since_tick = 0
        self.reliable_seq = 0
        self.reliable_seen = 0
        self.seq = [0] * N_KEYS
        self.delivered = [0] * N_KEYS  # the newest sequence delivered per key
        self.last_sent = [float("-inf")] * N_KEYS
        # the model's pending values: key -> (sequence, eligible since, the lowest gain
        # (weight x priority) of the values it held while pending)
        self.pending: dict[int, tuple[int, float, float]] = {}
        # (tick time, bytes written, keyed bytes written)
        self.log: list[tuple[float, int, int]] = []

    # -- input ----------------------------------------------------------------------------

    def _offer(self, key: int, size: int) -> None:
        self.seq[key] += 1
        seq = self.seq[key]
        prio = self.prios[key]
        accepted = self.sched.offer(
            (1, str(key)),
            frame(b"K", key, seq, size),
            self.now,
            self.weights[key],
            self.caps[key],
            prio,
        )
        old = self.pending.get(key)
        gain = self.weights[key] * prio
        if accepted:
            since = old[1] if old is not None else self.now
            since = max(since, self.last_sent[key] + self.caps[key])
            self.pending[key] = (seq, since, min(gain, old[2]) if old is not None else gain)
        else:
            self.pending.pop(key, None)  # refused: the key is idle (counted)

    @rule(key=st.integers(0, N_KEYS - 1), size=st.integers(0, 10_000))
    def offer(self, key: int, size: int) -> None:
        self._offer(key, min(size, self.max_frame))

    @rule(key=st.integers(0, N_KEYS - 1), prio=st.sampled_from(PRIOS))
    def reprioritise(self, key: int, prio: float) -> None:
        """The publisher gives the key's next values another priority."""
        self.prios[key] = prio

    @precondition(lambda self: self.reliable_since_tick < self.budget * INTERVAL / 8)
    @rule(size=st.integers(0, 2_000))
    def reliable(self, size: int) -> None:
        size = min(max(size, _HEAD.size), int(self.budget * INTERVAL / 8) + _HEAD.size)
        self.reliable_seq += 1
        self.out += frame(b"R", 0, self.reliable_seq, size)
        self.reliable_since_tick += size

    @rule(
        ticks=st.integers(1, 60),
        jitter=st.floats(0.5, 1.5),
        flood=st.booleans(),
        size=st.one_of(st.just(10_000), st.integers(0, 10_000)),
        vary=st.booleans(),
    )
    def run(self, ticks: int, jitter: float, flood: bool, size: int, vary: bool) -> None:
        for i in range(ticks):
            if flood:
                for key in range(N_KEYS):
                    if vary and key % 2:  # each value with another priority than the last
                        self.prios[key] = PRIOS[(i + key) % len(PRIOS)]
                    self._offer(key, min(size, self.max_frame))
            self._tick(INTERVAL * jitter)

    def _tick(self, dt: float) -> None:
        self.now += dt
        now = self.now
        before = len(self.out)
        sent = self.sched.tick(now, self.reliable_since_tick, self.out, None)
        written = len(self.out) - before
        frames = parse(bytes(self.out))
        self.out = bytearray()
        keyed = 0
        for kind, key, seq, _ in frames:
            if kind == b"R":
                self.reliable_seen += 1
                assert seq == self.reliable_seen, "a reliable frame was dropped or reordered"
                continue
            keyed += 1
            assert seq > self.delivered[key], f"key {key}: value {seq} after {self.delivered[key]}"
            assert seq == self.seq[key], f"key {key}: value {seq} sent, {self.seq[key]} is newer"
            assert now - self.last_sent[key] >= self.caps[key] - 1e-9, f"key {key} over its rate"
            self.delivered[key] = seq
            self.last_sent[key] = now
            assert key in self.pending
            del self.pending[key]
        assert keyed == sent
        assert self.reliable_seen == self.reliable_seq
        self.log.append((now, written + self.reliable_since_tick, written))
        self.reliable_since_tick = 0

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def window_within_budget(self) -> None:
        """Keyed state is written only into a second that still has room: every window
        of one second ending with a keyed send holds at most the budget plus one
        message (reliable bytes included; reliable output alone is never held back)."""
        if not self.log or not self.log[-1][2]:
            return
        end = self.log[-1][0]
        total = sum(n for t, n, _ in self.log if t > end - 1.0 + 1e-6)
        assert total <= self.budget + self.max_frame, (
            f"{total} bytes in one second, budget {self.budget}"
        )

    @invariant()
    def no_starvation(self) -> None:
        """A key of gain g (weight x publisher priority; its lowest while pending) among
        n keys of gain at most G is sent within 2 x n x 2 ticks x G/g (+1 s for the
        window cap): each window of 2 ticks sends at least one value, and a key sent
        ahead of it must have waited (g/G) as long."""
        if not self.log:
            return
        heaviest = max(self.weights) * max(PRIOS)
        tick = INTERVAL * 1.5
        n = len(self.pending) or 1
        for key, (_, since, gain) in self.pending.items():
            bound = 2 * n * 2 * tick * heaviest / gain + 1.0 + tick
            waited = self.now - since
            assert waited <= bound, f"key {key} waited {waited:.2f}s > {bound:.2f}s"

    @invariant()
    def bounded(self) -> None:
        s = self.sched
        assert len(s.keys) <= s.max_keys
        assert 0 <= s.pending_bytes <= s.max_bytes
        assert s.pending == len(self.pending)


SchedulerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
test_scheduler = SchedulerMachine.TestCase


def test_reliable_charged_first() -> None:
    """Reliable bytes use the budget first: keyed state gets only what is left."""
    s = Scheduler(10_000, 0.05, 16, 1 << 20, 0.0)
    out = bytearray()
    for k in range(4):
        s.offer((1, str(k)), b"x" * 100, 0.0)
    # a tick's worth (500 B) of reliable output already went: nothing keyed this tick
    assert s.tick(0.05, 1_000, out, None) == 0
    assert s.pending == 4
    # later ticks send them, highest accumulated priority first
    sent = sum(s.tick(0.05 * i, 0, out, None) for i in range(2, 10))
    assert sent == 4
    assert s.pending == 0


def test_full_policy_refuses_and_counts() -> None:
    s = Scheduler(10_000, 0.05, 2, 1 << 20, 0.0)
    assert s.offer((1, "a"), b"1", 0.0)
    assert s.offer((1, "b"), b"2", 0.0)
    assert not s.offer((1, "c"), b"3", 0.0)  # both pending: refused
    assert s.refused == 1
    s.tick(0.05, 0, bytearray(), None)
    assert s.offer((1, "c"), b"3", 0.1)  # an idle key's state made room
    assert len(s.keys) == 2
    big = Scheduler(10_000, 0.05, 8, 10, 0.0)
    assert not big.offer((1, "a"), b"x" * 11, 0.0)
    assert big.refused == 1
    assert big.pending_bytes == 0


def test_rate_cap_and_supersede() -> None:
    s = Scheduler(1_000_000, 0.05, 8, 1 << 20, 0.0)
    out = bytearray()
    s.offer((1, "far"), b"v1", 0.0, 1.0, 1.0)
    assert s.tick(0.05, 0, out, None) == 1
    s.offer((1, "far"), b"v2", 0.1, 1.0, 1.0)
    s.offer((1, "far"), b"v3", 0.2, 1.0, 1.0)  # supersedes v2
    assert s.superseded == 1
    for i in range(2, 21):  # capped at 1 Hz: nothing before t=1.05
        assert s.tick(0.05 * i, 0, out, None) == 0
    assert s.tick(1.1, 0, out, None) == 1
    assert bytes(out) == b"v1v3"


def test_light_key_not_starved_by_heavy_flood() -> None:
    """Seven heavy keys flooded every tick with values of half a tick's budget: the light
    key still goes out, within the bound of the state machine above."""
    budget, now = 8_000, 0.0
    s = Scheduler(budget, INTERVAL, 64, 1 << 20, now)
    big = b"x" * int(budget * INTERVAL / 2)
    waits = []
    since = now
    for _ in range(400):
        for k in range(7):
            s.offer((1, str(k)), big, now, 4.0)
        if (1, "light") not in s.keys or s.keys[(1, "light")].frame is None:
            s.offer((1, "light"), big, now, 1.0)
            since = now
        now += INTERVAL
        out = bytearray()
        s.tick(now, 0, out, None)
        if s.keys[(1, "light")].frame is None:
            waits.append(now - since)
    bound = 2 * 8 * 2 * INTERVAL * 1.5 * 4.0 + 1.0 + INTERVAL * 1.5
    assert waits
    assert max(waits) <= bound


def test_priority_shares_a_tight_budget() -> None:
    """Two keys flooded every tick under a budget that carries one value per tick: the
    key of publisher priority 4 goes out about four times as often as the one of
    priority 1 (accumulated priority: each waits until its weight x priority x wait
    is the highest), and the light one still goes out."""
    budget, now = 2_000, 0.0
    s = Scheduler(budget, INTERVAL, 64, 1 << 20, now)
    value = b"x" * int(budget * INTERVAL)  # one value fills a tick
    sent = {"hi": 0, "lo": 0}
    for _ in range(400):
        s.offer((1, "hi"), value, now, 1.0, 0.0, 4.0)
        s.offer((1, "lo"), value, now, 1.0, 0.0, 1.0)
        now += INTERVAL
        out = bytearray()
        before = {k: s.keys[(1, k)].last_sent for k in sent}
        s.tick(now, 0, out, None)
        for k in sent:
            if s.keys[(1, k)].last_sent != before[k]:
                sent[k] += 1
    assert sent["lo"] > 0
    assert 3.0 <= sent["hi"] / sent["lo"] <= 5.0, sent


def test_reprioritised_key_not_starved() -> None:
    """Seven keys of priority 1 flooded every tick with values of half a tick's budget,
    and one key whose every value has another priority (1, 2, 1, ...): its wait keeps
    accumulating across the changes, so it goes out within the state machine's bound
    (a new priority that restarted the wait would starve it)."""
    budget, now = 8_000, 0.0
    s = Scheduler(budget, INTERVAL, 64, 1 << 20, now)
    big = b"x" * int(budget * INTERVAL / 2)
    waits = []
    since = now
    for i in range(400):
        for k in range(7):
            s.offer((1, str(k)), big, now, 1.0, 0.0, 1.0)
        st = s.keys.get((1, "mover"))
        if st is None or st.frame is None:
            since = now
        s.offer((1, "mover"), big, now, 1.0, 0.0, 1.0 + i % 2)
        now += INTERVAL
        s.tick(now, 0, bytearray(), None)
        if s.keys[(1, "mover")].frame is None:
            waits.append(now - since)
    if s.keys[(1, "mover")].frame is not None:
        waits.append(now - since)  # still waiting at the end: that wait counts too
    bound = 2 * 8 * 2 * INTERVAL * 1.5 * 2.0 + 1.0 + INTERVAL * 1.5
    assert len(waits) > 50
    assert max(waits) <= bound


def test_priority_range_is_documented() -> None:
    """The range the node honours: nothing below MIN_PRIORITY (no key stops growing)."""
    assert 0.0 < MIN_PRIORITY < 1.0 < MAX_PRIORITY
