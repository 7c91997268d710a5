"""The ``meshgate`` command (also ``python -m meshgate``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .logs import LOG_FORMATS


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="meshgate", description=__doc__)
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run a local super-cluster with game clients")
    demo.add_argument("--clusters", type=int, default=3, help="clusters (default 3)")
    demo.add_argument("--nodes", type=int, default=2, help="nodes per cluster (default 2)")
    demo.add_argument("--clients", type=int, default=200, help="simulated game clients")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds of flight")
    demo.add_argument("--rate", type=float, default=1.0, help="inputs per client per second")
    demo.add_argument("--seed", type=int, default=1, help="random seed")
    demo.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="also log the nodes' INFO lines on standard error, as text or JSON",
    )
    demo.add_argument(
        "--backbone",
        choices=("meshgate", "nats"),
        default="meshgate",
        help="meshgate's own routes and gateways (default), or nats-server clusters",
    )
    demo.add_argument(
        "--dashboard",
        action="store_true",
        help="print (and, with a display, open) the live dashboard; nodes stay up until Ctrl-C",
    )
    serve = sub.add_parser("serve", help="run one node from a TOML configuration file")
    serve.add_argument("-c", "--config", required=True, help="TOML file (GatewayConfig fields)")
    serve.add_argument(
        "-v", "--verbose", action="count", default=0, help="debug logging (default: INFO)"
    )
    serve.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines on standard error as text (default) or one JSON object per line",
    )
    serve.add_argument(
        "--check", action="store_true", help="validate the file, print every error, exit 2 if any"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="node processes sharing the client port, routed to each other (default 1)",
    )
    # how a worker pool gives each worker its own name and ports (JSON object)
    serve.add_argument("--worker-overrides", help=argparse.SUPPRESS)
    topo = sub.add_parser(
        "topology", help="discover a running super-cluster from one node and draw it as SVG"
    )
    topo.add_argument(
        "urls",
        nargs="+",
        help="monitoring URLs (http://host:port); one is enough, its peers are discovered",
    )
    topo.add_argument("-o", "--output", help="SVG file to write (default: standard output)")
    topo.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between the two samples that give message rates (0: one sample)",
    )
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshgate`` console script."""
    args = _build_parser().parse_args(argv)
    if args.version:
        from ._version import __version__

        print(f"meshgate {__version__}")
        return 0
    if args.command == "demo":
        from ._demo import run_demo

        if args.log_format is not None:
            import logging

            from .logs import configure_logging

            configure_logging(logging.INFO, args.log_format)

        return run_demo(
            clusters=args.clusters,
            nodes=args.nodes,
            clients=args.clients,
            duration=args.duration,
            rate=args.rate,
            seed=args.seed,
            backbone=args.backbone,
            dashboard=args.dashboard,
        )
    if args.command == "serve":
        from ._serve import serve_main

        if args.workers < 1:
            print("meshgate serve: --workers must be at least 1", file=sys.stderr)
            return 2
        overrides = None
        if args.worker_overrides:  # "-": a JSON object on standard input
            text = args.worker_overrides
            overrides = json.loads(sys.stdin.readline() if text == "-" else text)
        return serve_main(
            args.config,
            verbose=-1 if args.quiet else args.verbose,
            check=args.check,
            log_format=args.log_format,
            workers=args.workers,
            overrides=overrides,
        )
    if args.command == "topology":
        from .topology import topology_main

        return topology_main(args.urls, args.output, interval=args.interval)
    _build_parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
