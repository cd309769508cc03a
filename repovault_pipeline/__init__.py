"""RepoVault: git repositories archived into S3/MinIO, orchestrated by Dagster.

The package root imports nothing heavy: `repovault_pipeline.core` is plain Python, and the
Dagster definitions live in `repovault_pipeline.definitions`. Importing it makes every log record
of the process go through `mask_secrets` (CLI, API, code server, run workers alike).
"""

__version__ = "0.1.0"

from .core.common.redact import mask_log_records  # after __version__, which modules import

mask_log_records()  # every process that imports RepoVault masks its log records
