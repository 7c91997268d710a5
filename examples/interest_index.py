"""Example: use meshgate's interest graph on its own to route game updates.

Run: ``python examples/interest_index.py``
"""

from __future__ import annotations

from meshgate.interest import InterestGraph


def main() -> None:
    graph: InterestGraph[str] = InterestGraph()
    graph.add("game", "ship.*.pos", "radar")
    graph.add("game", "ship.7.>", "pilot-7")
    graph.add("game", "ship.>", "physics-a", queue="physics")
    graph.add("game", "ship.>", "physics-b", queue="physics")
    for subject in ("ship.7.pos", "ship.7.hp", "ship.8.pos"):
        m = graph.match("game", subject)
        assert m is not None
        groups = dict(m.queues)
        print(f"{subject:<12} plain={list(m.plain)} queue groups={groups}")


if __name__ == "__main__":
    main()
