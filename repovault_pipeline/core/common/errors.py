"""Errors of the archive, split by what a caller should do about them."""

from __future__ import annotations


class ArchiveError(Exception):
    """A failure that retrying will not fix; `str()` is the reason recorded in `error`."""


class TransientError(ArchiveError):
    """A failure worth retrying: the network, the object store or the remote hiccupped."""


class RepoNotFound(ArchiveError):
    """The remote says the repository does not exist, or we may not read it."""


class RepoTooLarge(ArchiveError):
    """The clone grew past REPOVAULT_MAX_REPO_MB."""


class WorkDirFull(ArchiveError):
    """The disk under REPOVAULT_WORK_DIR (or a restore's folder) filled up: the message says
    where, how much is free and what the repository needed so far; retrying as is cannot help."""


class GitTimeout(ArchiveError):
    """A git operation ran past REPOVAULT_GIT_TIMEOUT_S."""


class PreconditionFailed(ArchiveError):
    """A conditional write lost a race: the object changed since it was read (If-Match) or
    already exists (If-None-Match). Callers re-read and decide; it is never retried blindly."""


class SchemaMismatch(Exception):
    """The lineage database's schema is not one this RepoVault can use or upgrade (a newer
    RepoVault migrated it, or its tables are no release's); nothing was changed. The message
    says which revision or tables, and what to do."""
