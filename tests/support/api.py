"""`repovault serve` for the API tests: the command, and tokens made in the test's database."""

from __future__ import annotations

import os
import sys

import requests

from repovault_pipeline.core.lineage import open_lineage
from repovault_pipeline.core.tokens import TokenStore


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "repovault_pipeline.cli", "serve", "--port", str(port)]


def make_token(scope: str = "admin", name: str | None = "tests") -> str:
    """A new API token in the lineage database of REPOVAULT_DB_URL."""
    lineage = open_lineage(os.environ["REPOVAULT_DB_URL"])
    try:
        return TokenStore(lineage.engine).create(scope, name)[1]
    finally:
        lineage.dispose()


def session(token: str) -> requests.Session:
    """HTTP calls carrying `Authorization: Bearer <token>`."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http
