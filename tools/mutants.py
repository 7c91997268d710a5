"""The curated mutants of meshgate's routing logic (used by ``mutation_check.py``).

Each mutant is one textual change that must occur exactly once in its file (a test
checks that they all still apply), and a bug the suite must catch *deterministically*:
the mutation check runs only deterministic tests against each mutant.  Add a mutant
for every routing bug found and for every rule that a refactor could quietly break.
"""

from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    name: str
    #: what the mutant breaks
    breaks: str
    #: the file under src/meshgate
    path: str
    old: str
    new: str
    #: deterministic tests that must catch it (besides the default set)
    tests: tuple[str, ...] = ()


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "legality-table-skipped",
        "illegal opcodes are processed instead of refused with ILLEGAL_FOR_ROLE",
        "_node/_input.py",
        "        if op not in conn.legal:\n",
        "        if False:\n",
    ),
    Mutant(
        "peer-max-payload-unchecked",
        "the max_payload check removed for route and gateway input",
        "_node/_fanout.py",
        "        if size > self._max_payload:\n"
        '            self.outbox.fail(conn, ErrorCode.PAYLOAD_TOO_LARGE, f"{what} message',
        "        if False:\n"
        '            self.outbox.fail(conn, ErrorCode.PAYLOAD_TOO_LARGE, f"{what} message',
    ),
    Mutant(
        "route-subject-unvalidated",
        "RMSG/GMSG subjects from route and gateway peers are not validated",
        "_node/_fanout.py",
        "        valid = self._valid\n        if subject not in valid and not self._validate(conn, "
        "subject):\n            return None\n",
        "        valid = self._valid\n",
    ),
    Mutant(
        "drop-oldest-drops-newest",
        "drop-oldest drops the newest frames",
        "_node/_delivery.py",
        "                drop += sizes.popleft()\n",
        "                drop += sizes.pop()\n",
    ),
    Mutant(
        "no-routed-reply-rewrite",
        "the _GR_ reply rewrite removed (interest-only race: request before inbox interest)",
        "_node/_fanout.py",
        "                    reply = routed_reply(cfg.cluster, cfg.name, reply)\n",
        "                    pass\n",
    ),
    Mutant(
        "aoi-keeps-by-enter-radius",
        "an area of interest keeps cells by the enter radius instead of the exit radius",
        "spatial.py",
        "        keep = grid.cells_within(x, y, self.exit_radius)\n",
        "        keep = grid.cells_within(x, y, self.enter_radius)\n",
    ),
    Mutant(
        "route-unsub-not-passed-to-gateways",
        "a route peer's last unsubscribe is not passed on to gateways",
        "_node/_routes.py",
        "        if entry is not None and self.graph.remove(account, pattern, entry, queue):\n"
        "            self.bus.cluster_key(account, pattern, queue, False)\n",
        "        if entry is not None and self.graph.remove(account, pattern, entry, queue):\n"
        "            pass\n",
    ),
    Mutant(
        "gateway-input-wrong-account",
        "gateway input matched against another account's index",
        "_node/_fanout.py",
        "        index = self.graph.index(account)\n"
        "        m = index.match(subject) if index is not None else None\n"
        "        n = self.results(m, acct, account, subject, reply, payload, key, FROM_GATEWAY",
        '        index = self.graph.index("$G")\n'
        "        m = index.match(subject) if index is not None else None\n"
        "        n = self.results(m, acct, account, subject, reply, payload, key, FROM_GATEWAY",
    ),
    Mutant(
        "queue-group-served-twice",
        "a queue group served in this cluster is served again by a remote cluster",
        "_node/_fanout.py",
        "                    done = set(served)\n",
        "                    done = set()\n",
    ),
    Mutant(
        "route-input-rerouted",
        "a message from a route is routed on (to routes and gateways), not local only",
        "_node/_fanout.py",
        "        self.results(m, acct, account, subject, reply, payload, key, FROM_ROUTE, queues)\n",
        "        self.results(m, acct, account, subject, reply, payload, key, FROM_CLIENT, queues)\n",
    ),
    Mutant(
        "drop-new-appends-anyway",
        "drop-new counts a drop but queues the message past the bound",
        "_node/_delivery.py",
        '        if policy == "drop-new":\n            c.dropped += 1\n            '
        "self.dropped_messages += 1\n            return False\n",
        '        if policy == "drop-new":\n            c.dropped += 1\n            '
        "self.dropped_messages += 1\n            return True\n",
    ),
    Mutant(
        "slow-consumer-not-disconnected",
        "the disconnect policy leaves the slow client connected",
        "_node/_delivery.py",
        '        self._slow(c, "pending output")\n        return False\n',
        "        return False\n",
    ),
    Mutant(
        "auto-unsubscribe-off-by-one",
        "UNSUB with max_msgs delivers one message too many",
        "_node/_delivery.py",
        "            if sub.remaining <= 0:\n",
        "            if sub.remaining < 0:\n",
    ),
    Mutant(
        "publish-permission-ignored",
        "a denied publish is still routed",
        "_node/_fanout.py",
        "        if conn.pub_perm is not None and not _pub_allowed(self.outbox, conn, subject, reply):\n"
        "            return\n",
        "        if conn.pub_perm is not None and not _pub_allowed(self.outbox, conn, subject, reply):\n"
        "            pass\n",
        ("tests/test_node_security.py",),
    ),
    Mutant(
        "coalesce-keeps-stale-frame",
        "coalesce keeps the old keyed frame's bytes counted (the state lane overflows)",
        "_node/_delivery.py",
        "            old = c.keyed.pop(k, None)\n",
        "            old = None\n",
        ("tests/test_delivery_lanes.py",),
    ),
    Mutant(
        "speculative-correction-to-everyone",
        "a correction reaches every client instead of exactly those that got the relay",
        "_game/_layer.py",
        "        recipients = [(sub.conn.id, sub.sid) for sub in plain if sub.prefix is not None]\n",
        "        recipients = [(sub.conn.id, sub.sid) for sub in plain]\n",
        ("tests/test_speculative.py",),
    ),
    Mutant(
        "route-secret-unchecked",
        "a route dialer without the cluster secret is accepted",
        "_node/_routes.py",
        '        if secret is not None and not out.check_secret(conn, hello.token, secret, "route"):\n',
        "        if False:\n",
    ),
    Mutant(
        "routed-reply-permission-wrapped-only",
        "publish permissions are checked on the _GR_ envelope, not the subject delivered",
        "_node/_fanout.py",
        "            subject = parsed[2]\n",
        "            pass\n",
    ),
    Mutant(
        "players-subscribe-to-the-control-plane",
        "an ordinary client's $ subscription lands in the control namespace",
        "_game/_layer.py",
        "        if conn.role is not Role.REPLICANT:\n            return None\n",
        "        if conn.role is not Role.REPLICANT:\n            return r.control_account(account)\n",
    ),
    Mutant(
        "client-input-bytes-unbounded",
        "held inputs are not bounded per client",
        "authority.py",
        "            or used + size > self.max_client_bytes\n",
        "            or False\n",
    ),
    Mutant(
        "control-frames-untracked",
        "drop-oldest cuts mid-frame when a PING or ERROR sits among the data frames",
        "_node/_outbox.py",
        "            sizes.append(len(data))  # keeps drop-oldest on frame boundaries\n",
        "            pass\n",
    ),
    Mutant(
        "route-payload-bytes-out-counted-twice",
        "payload bytes out counted twice for messages from a route or the backbone (a real "
        "bug of the three-loop fan-out: /varz payload_bytes_out double-counted)",
        "_node/_fanout.py",
        "            self.payload_out += n * plen\n",
        "            self.payload_out += n * plen * (2 if source == FROM_ROUTE else 1)\n",
        ("tests/test_counters.py",),
    ),
    Mutant(
        "game-input-fields-swapped",
        "the input delivered to an owner carries the client as the entity and back",
        "protocol/game.py",
        "        return _pack((entity, epoch, client, seq, data, speculative))\n",
        "        return _pack((client, epoch, entity, seq, data, speculative))\n",
        ("tests/test_game_messages.py",),
    ),
    Mutant(
        "game-input-negative-seq",
        "a client's input with a negative sequence number is accepted",
        "protocol/game.py",
        "                if type(seq) is int and seq >= 0 and type(data) is bytes:\n"
        "                    return (seq, data, None)\n",
        "                if type(seq) is int and type(data) is bytes:\n"
        "                    return (seq, data, None)\n",
        ("tests/test_game_messages.py",),
    ),
    Mutant(
        "scheduler-priority-not-accumulated",
        "the scheduler ranks keys by weight alone: light keys starve under a flood",
        "_node/_scheduler.py",
        "(st.weight * st.priority * (now - st.eligible), k)",
        "(st.weight * st.priority, k)",
        ("tests/core/test_scheduler_property.py",),
    ),
    Mutant(
        "scheduler-publisher-priority-ignored",
        "the scheduler ranks keys by relevance alone: a publisher priority changes nothing",
        "_node/_scheduler.py",
        "(st.weight * st.priority * (now - st.eligible), k)",
        "(st.weight * (now - st.eligible), k)",
        ("tests/core/test_scheduler_property.py", "tests/core/test_priority_core.py"),
    ),
    Mutant(
        "scheduler-reprioritised-wait-restarts",
        "a value with another publisher priority restarts its key's wait: the key starves",
        "_node/_scheduler.py",
        "        if old is None:\n            st.since = now\n",
        "        if old is None or st.priority != priority:\n            st.since = now\n",
        ("tests/core/test_scheduler_property.py",),
    ),
    Mutant(
        "priority-dropped-on-route-hop",
        "keyed state crosses a route with its key but without its publisher priority",
        "_node/_fanout.py",
        "                if key is not None and peer.relay_keys:  # keyed state: key, priority\n"
        "                    priority = self._delivery.priority\n",
        "                if key is not None and peer.relay_keys:  # keyed state: key, priority\n"
        "                    priority = None\n",
        ("tests/core/test_priority_core.py",),
    ),
    Mutant(
        "scheduler-superseded-value-kept",
        "a newer value of a waiting key is dropped and the older one sent",
        "_node/_scheduler.py",
        "                st.frame = frame\n                self.pending_bytes += size - len(old)\n",
        "                self.pending_bytes += size - len(old)\n",
        ("tests/core/test_scheduler_property.py",),
    ),
    Mutant(
        "scheduler-clears-reliable-output",
        "the send tick drops reliable frames already in the client's output",
        "_node/_scheduler.py",
        "        if allow > 0 and self.pending and not hold:\n",
        "        del out[:]\n        if allow > 0 and self.pending and not hold:\n",
        ("tests/core/test_scheduler_core.py", "tests/core/test_scheduler_property.py"),
    ),
    Mutant(
        "scheduler-admitted-without-send-tick",
        "a budget added by a reload schedules clients no send tick serves",
        "_node/_delivery.py",
        "        if budget is None or c.role is not Role.CLIENT or not self.enabled:\n",
        "        if budget is None or c.role is not Role.CLIENT:\n",
        ("tests/core/test_scheduler_core.py",),
    ),
)
