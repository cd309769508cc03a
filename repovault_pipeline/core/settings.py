"""RepoVault configuration, read from the environment (SPEC "Configuration").

Read at the moment it is needed rather than at import, so a long-lived code server picks up the
environment it was started with and tests can point one process at several servers.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")


class ConfigError(ValueError):
    """A setting has a value RepoVault cannot use; the message says which and how to fix it."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in value.split(",") if part.strip())


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}; set it to at least {minimum}")
    return value


def _flag(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value; set it to true or false")


def _choice(name: str, raw: str, default: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class Topics:
    """The four Kafka topics and how they are created when missing."""

    pending: str = "pendientes"
    in_progress: str = "en_proceso"
    completed: str = "completados"
    rejected: str = "rechazados"
    partitions: int = 3
    replication_factor: int = 1

    def all(self) -> tuple[str, ...]:
        return (self.pending, self.in_progress, self.completed, self.rejected)


@dataclass(frozen=True)
class Keep:
    """What a run keeps beside the git history: REPOVAULT_KEEP_LFS and REPOVAULT_KEEP_WIKI,
    or its request's own choice."""

    lfs: bool = True
    wiki: bool = True

    def choose(self, choices: dict[str, bool]) -> Keep:
        """These defaults with a request's choices (`keep_choices`) applied."""
        return replace(self, **choices)


KEEP_CHOICES = ("lfs", "wiki")


def keep_choices(raw: object) -> dict[str, bool]:
    """A request's `keep`: an object naming some of KEEP_CHOICES, each true or false; what it
    leaves out follows the settings. ValueError with the reason for anything else."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(
            f'keep must be an object such as {{"lfs": false}}; keys: {", ".join(KEEP_CHOICES)}'
        )
    unknown = sorted(str(k)[:20] for k in raw if k not in KEEP_CHOICES)
    if unknown:
        raise ValueError(f"keep has unknown {unknown[0]!r}; keys: {', '.join(KEEP_CHOICES)}")
    wrong = sorted(k for k, v in raw.items() if not isinstance(v, bool))
    if wrong:
        raise ValueError(f"keep.{wrong[0]} must be true or false")
    return {k: raw[k] for k in KEEP_CHOICES if k in raw}


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    topics: Topics = field(default_factory=Topics)
    s3_endpoint: str | None = None
    local_store: Path = Path(".repovault/store")
    bucket_prefix: str = "repo-"
    db_url: str = "sqlite:///.repovault/lineage.db"
    allowed_hosts: tuple[str, ...] = ("github.com",)
    allowed_schemes: tuple[str, ...] = ("https", "ssh")
    github_token: str | None = field(default=None, repr=False)
    ssh_key: Path | None = None
    ssh_known_hosts: Path = Path(".repovault/ssh_known_hosts")
    max_repo_mb: int = 2048
    git_timeout_s: int = 1800
    keep_snapshots: int = 10
    trending_url: str = "https://github.com/trending"
    github_api: str = "https://api.github.com"
    trending_language: str | None = None
    trending_since: str = "daily"
    work_dir: Path = Path(tempfile.gettempdir()) / "repovault"
    upload_workers: int = 16
    injector_batch: int = 500
    republish_after_s: int = 900
    run_timeout_s: int = 3 * 1800
    lease_ttl_s: int = 120
    lease_wait_s: int = 300
    keep_lfs: bool = True
    keep_wiki: bool = True

    @property
    def keep(self) -> Keep:
        return Keep(lfs=self.keep_lfs, wiki=self.keep_wiki)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        prefix = env.get("REPOVAULT_BUCKET_PREFIX", "repo-").strip()
        if not _BUCKET_PREFIX_RE.match(prefix):
            raise ConfigError(
                f"REPOVAULT_BUCKET_PREFIX={prefix!r} cannot start an S3 bucket name; use up to 30 "
                "lowercase letters, digits or hyphens, starting with a letter or digit"
            )
        ssh_key = env.get("REPOVAULT_SSH_KEY", "").strip()
        git_timeout_s = _int(env, "REPOVAULT_GIT_TIMEOUT_S", 1800, minimum=1)
        return cls(
            kafka_bootstrap=env.get("REPOVAULT_KAFKA_BOOTSTRAP", "").strip() or "localhost:9092",
            topics=Topics(
                pending=env.get("REPOVAULT_TOPIC_PENDING", "").strip() or "pendientes",
                in_progress=env.get("REPOVAULT_TOPIC_IN_PROGRESS", "").strip() or "en_proceso",
                completed=env.get("REPOVAULT_TOPIC_COMPLETED", "").strip() or "completados",
                rejected=env.get("REPOVAULT_TOPIC_REJECTED", "").strip() or "rechazados",
                partitions=_int(env, "REPOVAULT_TOPIC_PARTITIONS", 3, minimum=1),
                replication_factor=_int(env, "REPOVAULT_TOPIC_REPLICATION", 1, minimum=1),
            ),
            s3_endpoint=env.get("REPOVAULT_S3_ENDPOINT", "").strip() or None,
            local_store=Path(env.get("REPOVAULT_LOCAL_STORE", "").strip() or ".repovault/store"),
            bucket_prefix=prefix,
            db_url=env.get("REPOVAULT_DB_URL", "").strip() or "sqlite:///.repovault/lineage.db",
            allowed_hosts=_csv(env.get("REPOVAULT_ALLOWED_HOSTS", "github.com")),
            allowed_schemes=_csv(env.get("REPOVAULT_ALLOWED_SCHEMES", "https,ssh")),
            github_token=env.get("GITHUB_TOKEN", "").strip() or None,
            ssh_key=Path(ssh_key) if ssh_key else None,
            ssh_known_hosts=Path(
                env.get("REPOVAULT_SSH_KNOWN_HOSTS", "").strip() or ".repovault/ssh_known_hosts"
            ),
            max_repo_mb=_int(env, "REPOVAULT_MAX_REPO_MB", 2048, minimum=1),
            git_timeout_s=git_timeout_s,
            keep_snapshots=_int(env, "REPOVAULT_KEEP_SNAPSHOTS", 10, minimum=1),
            trending_url=env.get("REPOVAULT_TRENDING_URL", "").strip()
            or "https://github.com/trending",
            github_api=(env.get("REPOVAULT_GITHUB_API", "").strip() or "https://api.github.com"),
            trending_language=env.get("REPOVAULT_TRENDING_LANGUAGE", "").strip() or None,
            trending_since=_choice(
                "REPOVAULT_TRENDING_SINCE",
                env.get("REPOVAULT_TRENDING_SINCE", ""),
                "daily",
                ("daily", "weekly", "monthly"),
            ),
            work_dir=Path(
                env.get("REPOVAULT_WORK_DIR", "").strip()
                or Path(tempfile.gettempdir()) / "repovault"
            ),
            upload_workers=_int(env, "REPOVAULT_UPLOAD_WORKERS", 16, minimum=1),
            injector_batch=_int(env, "REPOVAULT_INJECTOR_BATCH", 500, minimum=1),
            republish_after_s=_int(env, "REPOVAULT_REPUBLISH_AFTER_S", 900, minimum=0),
            # Clone and bundle are each bounded by the git timeout; the upload is short beside
            # them. A run three times as long has lost its worker.
            run_timeout_s=_int(env, "REPOVAULT_RUN_TIMEOUT_S", 3 * git_timeout_s, minimum=1),
            lease_ttl_s=_int(env, "REPOVAULT_LEASE_TTL_S", 120, minimum=2),
            lease_wait_s=_int(env, "REPOVAULT_LEASE_WAIT_S", 300, minimum=0),
            keep_lfs=_flag(env, "REPOVAULT_KEEP_LFS", True),
            keep_wiki=_flag(env, "REPOVAULT_KEEP_WIKI", True),
        )
