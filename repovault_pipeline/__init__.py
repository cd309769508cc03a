"""RepoVault: git repositories archived into S3/MinIO, orchestrated by Dagster.

The package root imports nothing heavy: `repovault_pipeline.core` is plain Python, and the
Dagster definitions live in `repovault_pipeline.definitions`.
"""

__version__ = "0.1.0"
