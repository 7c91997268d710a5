"""OpenTelemetry spans for traced messages (the optional ``otel`` extra).

With ``opentelemetry-api`` installed, every trace event the core finishes (a message
with ``Nats-Trace-Dest``, or with a W3C ``traceparent``) becomes one span per node
crossed: named ``meshgate <subject>``, a child of the message's ``traceparent``, from
the ingress to the last egress, with the node, cluster, connection kinds and hop as
attributes.  Spans go to whatever tracer provider the application configured (none:
the API's no-op).  Without the package nothing is attached and messages with only a
``traceparent`` cost nothing extra.
"""

from __future__ import annotations

__all__ = ["span_recorder"]

import datetime
from collections.abc import Callable
from typing import Any

_KINDS = {0: "client", 1: "route", 2: "gateway", 4: "leaf"}


def _ns(ts: str) -> int:
    return int(datetime.datetime.fromisoformat(ts).timestamp() * 1_000_000_000)


def span_recorder() -> Callable[[dict[str, Any]], None] | None:
    """A function that records one span per trace event (the core's tracer calls it),
    or None if OpenTelemetry is not installed."""
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    otel = trace.get_tracer("meshgate")
    propagator = TraceContextTextMapPropagator()

    def on_event(event: dict[str, Any]) -> None:
        header = event["request"].get("header", {})
        carrier = {k.lower(): v[0] for k, v in header.items() if v}
        context = propagator.extract(carrier)
        steps = event["events"]
        ingress = steps[0]
        attributes: dict[str, str | int] = {
            "messaging.system": "nats",
            "messaging.destination.name": ingress.get("subj", ""),
            "meshgate.node": event["server"]["name"],
            "meshgate.cluster": event["server"]["cluster"],
            "meshgate.ingress": _KINDS.get(ingress.get("kind", -1), "other"),
            "meshgate.egress": ",".join(
                sorted({_KINDS.get(s.get("kind", -1), "other") for s in steps[1:]})
            ),
            "meshgate.copies": len(steps) - 1,
        }
        hop = carrier.get("nats-trace-hop")
        if hop:
            attributes["meshgate.hop"] = hop
        span = otel.start_span(
            f"meshgate {ingress.get('subj', '')}",
            context=context,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            start_time=_ns(ingress["ts"]),
        )
        span.end(end_time=_ns(steps[-1]["ts"]))

    return on_event
