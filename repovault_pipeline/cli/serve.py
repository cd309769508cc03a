"""`repovault serve`: the HTTP API under uvicorn, apart because it alone loads the web stack
(imported when the command runs, so the other commands start without it)."""

from __future__ import annotations

import argparse

from ..core.common.settings import Settings
from .common import Subparsers


def register(sub: Subparsers) -> None:
    serve = sub.add_parser("serve", help="the HTTP API (/api/..., OpenAPI at /api/docs)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """The HTTP API until interrupted (`repovault_pipeline.api`)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from ..api import create_app

    # Every log record is masked when it is made (core.redact), its arguments merged into the
    # message: the access log's formatter, which takes the arguments apart, gets the plain one.
    config = {**LOGGING_CONFIG, "formatters": {**LOGGING_CONFIG["formatters"]}}
    config["formatters"]["access"] = config["formatters"]["default"]
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level="info", log_config=config
    )
    return 0
