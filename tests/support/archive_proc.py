"""An archive run in a process of its own, for tests that SIGKILL it or run two at once.

`python -m tests.support.archive_proc URL` archives URL with the settings of its environment
and prints the result as JSON; a RepoVault error prints its reason and exits 1. The run's log
goes to stderr.
"""

from __future__ import annotations

import json
import logging
import sys

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.snapshot import SnapshotWriter
from repovault_pipeline.core.vault.store import open_store


def main(url: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
    try:
        result = SnapshotWriter(settings, open_store(settings)).archive(ref)
    except ArchiveError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
