"""RepoVault configuration, read from the environment (docs/contract.md, "Environment").

This module is the only place that reads the environment. Read at the moment it is needed
rather than at import, so a long-lived code server picks up the environment it was started
with and tests can point one process at several servers.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

_BUCKET_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")


class ConfigError(ValueError):
    """A setting has a value RepoVault cannot use; the message says which and how to fix it."""


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, stripped; unset or blank is the default."""
    return env.get(name, "").strip() or default


def _csv(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    return tuple(part.strip().lower() for part in raw.split(",") if part.strip())


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
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


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value; set it to true or false")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
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


# The periods of GitHub's trending page, shortest first.
TRENDING_PERIODS = ("daily", "weekly", "monthly")
KEEP_METADATA = ("auto", "on", "off")
S3_SSE = ("AES256", "aws:kms")  # REPOVAULT_S3_SSE: S3's names for SSE-S3 and SSE-KMS
GIT_TIMEOUT_S = 1800
# A store that accepts connections but never answers must end a command, not hang it.
DB_TIMEOUT_S = 30  # connecting, one statement, a dead connection noticed
S3_TIMEOUT_S = 60  # one socket read (or send) of an S3 request; a connection: at most 10 s
# Clone and bundle are each bounded by the git timeout; the upload is short beside them. A run
# this many git timeouts long has lost its worker.
RUN_TIMEOUT_GIT_TIMEOUTS = 3


@dataclass(frozen=True)
class Keep:
    """What a run keeps beside the git history: REPOVAULT_KEEP_LFS, REPOVAULT_KEEP_WIKI and
    REPOVAULT_KEEP_METADATA, or its request's own choice."""

    lfs: bool = True
    wiki: bool = True
    metadata: bool | None = None  # None: REPOVAULT_KEEP_METADATA decides (core/metadata.wanted)

    def choose(self, choices: dict[str, bool]) -> Keep:
        """These defaults with a request's choices (`keep_choices`) applied."""
        return replace(self, **choices)


KEEP_CHOICES = ("lfs", "wiki", "metadata")


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


# A source checkout (an editable install): its `.repovault` is where `make run` keeps its data.
_CHECKOUT = Path(__file__).resolve().parents[3]


def repovault_home(env: Mapping[str, str] | None = None) -> Path:
    """REPOVAULT_HOME: where the embedded default keeps its data, whatever the current folder.

    Unset, it is the checkout's `.repovault` when RepoVault runs from a source checkout (the
    folder `make run` uses, so a CLI called from anywhere finds the same vault), else
    `~/.local/share/repovault` for an installed package."""
    env = os.environ if env is None else env
    if raw := _str(env, "REPOVAULT_HOME", ""):
        return Path(raw).expanduser().absolute()
    if (_CHECKOUT / "setup.py").is_file() and (_CHECKOUT / "repovault_pipeline").is_dir():
        return _CHECKOUT / ".repovault"
    return Path.home() / ".local" / "share" / "repovault"


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class Settings:
    """Every setting with its default; `from_env` takes the defaults from here."""

    kafka_bootstrap: str = "localhost:9092"
    topics: Topics = field(default_factory=Topics)
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    home: Path = field(default_factory=lambda: repovault_home({}))
    local_store: Path = field(default_factory=lambda: repovault_home({}) / "store")
    bucket_prefix: str = "repo-"
    db_url: str = field(default_factory=lambda: _sqlite_url(repovault_home({}) / "lineage.db"))
    db_timeout_s: int = DB_TIMEOUT_S
    s3_timeout_s: int = S3_TIMEOUT_S
    allowed_hosts: tuple[str, ...] = ("github.com",)
    allowed_schemes: tuple[str, ...] = ("https", "ssh")
    github_token: str | None = field(default=None, repr=False)
    ssh_key: Path | None = None
    ssh_known_hosts: Path = field(default_factory=lambda: repovault_home({}) / "ssh_known_hosts")
    max_repo_mb: int = 2048
    git_timeout_s: int = GIT_TIMEOUT_S
    keep_snapshots: int = 10
    trending_url: str = "https://github.com/trending"
    github_api: str = "https://api.github.com"
    host_concurrency: int = 4
    trending_language: str | None = None
    trending_since: str = TRENDING_PERIODS[0]
    work_dir: Path = Path(tempfile.gettempdir()) / "repovault"
    upload_workers: int = 16
    progress_every_s: int = 2  # at most one upload progress line this often (0: every object)
    injector_batch: int = 500
    republish_after_s: int = 900
    run_timeout_s: int = RUN_TIMEOUT_GIT_TIMEOUTS * GIT_TIMEOUT_S
    retry_delay_s: int = 5
    lease_ttl_s: int = 120
    lease_wait_s: int = 300
    # reconcile_sensor fails a started run whose lease went this many TTLs without a renewal.
    orphan_after_ttls: int = 3
    gitlab_api: str = "https://gitlab.com/api/v4"
    gitlab_token: str | None = field(default=None, repr=False)
    keep_metadata: str = KEEP_METADATA[0]
    metadata_full_every_d: int = 7
    refresh_interval_h: int = 24
    minio_console_url: str | None = None
    keep_lfs: bool = True
    keep_wiki: bool = True
    s3_sse: str | None = None  # server-side encryption asked of every write: AES256 or aws:kms
    s3_sse_kms_key_id: str | None = None
    # age public keys (age1..., ssh-ed25519 ...): bundles, LFS objects and metadata are
    # encrypted to them before upload (docs/contract.md, "Encryption at rest").
    encrypt_recipients: tuple[str, ...] = ()
    decrypt_identity: Path | None = field(default=None, repr=False)  # restore and verify
    # Dagster's instance (DAGSTER_HOME; `make run` keeps it in REPOVAULT_HOME/dagster_home): the
    # CLI reads its run queue to say why a request waits and how far a run has come.
    dagster_home: Path = field(default_factory=lambda: repovault_home({}) / "dagster_home")
    # The HTTP API (`repovault serve`): URLs one token may submit per minute, and the Keycloak
    # realm whose bearer tokens it accepts beside its own (None: API tokens only).
    api_submit_per_minute: int = 1000
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None  # None: the issuer's /protocol/openid-connect/certs
    oidc_audience: tuple[str, ...] = ("repovault-api",)  # a token must be meant for one of them

    @property
    def keep(self) -> Keep:
        return Keep(lfs=self.keep_lfs, wiki=self.keep_wiki)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] = {}
    ) -> Settings:
        """The settings of `env` (default: the process environment); `overrides` are values
        by variable name that win over it (a Dagster resource's configuration), None skipped."""
        env = {
            **(os.environ if env is None else env),
            **{name: value for name, value in overrides.items() if value is not None},
        }
        d, t = cls(), Topics()
        home = repovault_home(env)
        prefix = _str(env, "REPOVAULT_BUCKET_PREFIX", d.bucket_prefix)
        if not _BUCKET_PREFIX_RE.match(prefix):
            raise ConfigError(
                f"REPOVAULT_BUCKET_PREFIX={prefix!r} cannot start an S3 bucket name; use up to 30 "
                "lowercase letters, digits or hyphens, starting with a letter or digit"
            )
        ssh_key = _str(env, "REPOVAULT_SSH_KEY", "")
        git_timeout_s = _int(env, "REPOVAULT_GIT_TIMEOUT_S", d.git_timeout_s, minimum=1)
        s3_endpoint = _str(env, "REPOVAULT_S3_ENDPOINT", "") or d.s3_endpoint
        sse, sse_key = _sse(env, s3_endpoint)
        identity = _str(env, "REPOVAULT_DECRYPT_IDENTITY", "")
        return cls(
            kafka_bootstrap=_str(env, "REPOVAULT_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            topics=Topics(
                pending=_str(env, "REPOVAULT_TOPIC_PENDING", t.pending),
                in_progress=_str(env, "REPOVAULT_TOPIC_IN_PROGRESS", t.in_progress),
                completed=_str(env, "REPOVAULT_TOPIC_COMPLETED", t.completed),
                rejected=_str(env, "REPOVAULT_TOPIC_REJECTED", t.rejected),
                partitions=_int(env, "REPOVAULT_TOPIC_PARTITIONS", t.partitions, minimum=1),
                replication_factor=_int(
                    env, "REPOVAULT_TOPIC_REPLICATION", t.replication_factor, minimum=1
                ),
            ),
            s3_endpoint=s3_endpoint,
            s3_sse=sse,
            s3_sse_kms_key_id=sse_key,
            encrypt_recipients=_recipients(env),
            decrypt_identity=Path(identity).expanduser() if identity else None,
            s3_region=_str(env, "AWS_REGION", "") or _str(env, "AWS_DEFAULT_REGION", d.s3_region),
            home=home,
            local_store=Path(_str(env, "REPOVAULT_LOCAL_STORE", str(home / "store"))),
            bucket_prefix=prefix,
            db_url=_str(env, "REPOVAULT_DB_URL", _sqlite_url(home / "lineage.db")),
            db_timeout_s=_int(env, "REPOVAULT_DB_TIMEOUT_S", d.db_timeout_s, minimum=1),
            s3_timeout_s=_int(env, "REPOVAULT_S3_TIMEOUT_S", d.s3_timeout_s, minimum=1),
            allowed_hosts=_csv(env, "REPOVAULT_ALLOWED_HOSTS", d.allowed_hosts),
            allowed_schemes=_csv(env, "REPOVAULT_ALLOWED_SCHEMES", d.allowed_schemes),
            github_token=_str(env, "GITHUB_TOKEN", "") or d.github_token,
            ssh_key=Path(ssh_key) if ssh_key else d.ssh_key,
            ssh_known_hosts=Path(
                _str(env, "REPOVAULT_SSH_KNOWN_HOSTS", str(home / "ssh_known_hosts"))
            ),
            max_repo_mb=_int(env, "REPOVAULT_MAX_REPO_MB", d.max_repo_mb, minimum=1),
            git_timeout_s=git_timeout_s,
            keep_snapshots=_int(env, "REPOVAULT_KEEP_SNAPSHOTS", d.keep_snapshots, minimum=1),
            trending_url=_str(env, "REPOVAULT_TRENDING_URL", d.trending_url),
            github_api=_str(env, "REPOVAULT_GITHUB_API", d.github_api),
            trending_language=_str(env, "REPOVAULT_TRENDING_LANGUAGE", "") or d.trending_language,
            host_concurrency=_int(env, "REPOVAULT_HOST_CONCURRENCY", d.host_concurrency, minimum=1),
            trending_since=_choice(
                env, "REPOVAULT_TRENDING_SINCE", d.trending_since, TRENDING_PERIODS
            ),
            work_dir=Path(_str(env, "REPOVAULT_WORK_DIR", str(d.work_dir))),
            upload_workers=_int(env, "REPOVAULT_UPLOAD_WORKERS", d.upload_workers, minimum=1),
            progress_every_s=_int(env, "REPOVAULT_PROGRESS_EVERY_S", d.progress_every_s, minimum=0),
            injector_batch=_int(env, "REPOVAULT_INJECTOR_BATCH", d.injector_batch, minimum=1),
            republish_after_s=_int(
                env, "REPOVAULT_REPUBLISH_AFTER_S", d.republish_after_s, minimum=0
            ),
            run_timeout_s=_int(
                env, "REPOVAULT_RUN_TIMEOUT_S", RUN_TIMEOUT_GIT_TIMEOUTS * git_timeout_s, minimum=1
            ),
            retry_delay_s=_int(env, "REPOVAULT_RETRY_DELAY_S", d.retry_delay_s, minimum=0),
            lease_ttl_s=_int(env, "REPOVAULT_LEASE_TTL_S", d.lease_ttl_s, minimum=2),
            lease_wait_s=_int(env, "REPOVAULT_LEASE_WAIT_S", d.lease_wait_s, minimum=0),
            orphan_after_ttls=_int(
                env, "REPOVAULT_ORPHAN_AFTER_TTLS", d.orphan_after_ttls, minimum=1
            ),
            gitlab_api=_str(env, "REPOVAULT_GITLAB_API", d.gitlab_api),
            gitlab_token=_str(env, "GITLAB_TOKEN", "") or d.gitlab_token,
            keep_metadata=_choice(env, "REPOVAULT_KEEP_METADATA", d.keep_metadata, KEEP_METADATA),
            metadata_full_every_d=_int(
                env, "REPOVAULT_METADATA_FULL_EVERY_D", d.metadata_full_every_d, minimum=1
            ),
            refresh_interval_h=_int(
                env, "REPOVAULT_REFRESH_INTERVAL_H", d.refresh_interval_h, minimum=1
            ),
            minio_console_url=_str(env, "REPOVAULT_MINIO_CONSOLE_URL", "").rstrip("/")
            or d.minio_console_url,
            keep_lfs=_flag(env, "REPOVAULT_KEEP_LFS", d.keep_lfs),
            keep_wiki=_flag(env, "REPOVAULT_KEEP_WIKI", d.keep_wiki),
            dagster_home=Path(_str(env, "DAGSTER_HOME", str(home / "dagster_home"))),
            api_submit_per_minute=_int(
                env, "REPOVAULT_API_SUBMIT_PER_MINUTE", d.api_submit_per_minute, minimum=1
            ),
            oidc_issuer=_str(env, "REPOVAULT_OIDC_ISSUER", "").rstrip("/") or d.oidc_issuer,
            oidc_jwks_url=_str(env, "REPOVAULT_OIDC_JWKS_URL", "") or d.oidc_jwks_url,
            oidc_audience=tuple(
                a.strip() for a in env.get("REPOVAULT_OIDC_AUDIENCE", "").split(",") if a.strip()
            )
            or d.oidc_audience,
        )


def _sse(env: Mapping[str, str], s3_endpoint: str | None) -> tuple[str | None, str | None]:
    """REPOVAULT_S3_SSE and REPOVAULT_S3_SSE_KMS_KEY_ID, checked against each other and the
    store: a setting that cannot be honoured is refused, never ignored."""
    raw = _str(env, "REPOVAULT_S3_SSE", "")
    key_id = _str(env, "REPOVAULT_S3_SSE_KMS_KEY_ID", "") or None
    names = {choice.lower(): choice for choice in S3_SSE}
    sse = names.get(raw.lower()) if raw else None
    if raw and sse is None:
        raise ConfigError(f"REPOVAULT_S3_SSE={raw!r} is not one of {', '.join(S3_SSE)}")
    if key_id and sse != "aws:kms":
        raise ConfigError(
            "REPOVAULT_S3_SSE_KMS_KEY_ID is set but REPOVAULT_S3_SSE is not aws:kms; "
            "set REPOVAULT_S3_SSE=aws:kms or unset the key id"
        )
    if sse and not s3_endpoint:
        raise ConfigError(
            f"REPOVAULT_S3_SSE={sse} needs an S3 store, but REPOVAULT_S3_ENDPOINT is unset (the "
            "local folder store has no server-side encryption); set the endpoint or unset "
            "REPOVAULT_S3_SSE"
        )
    return sse, key_id


def _recipients(env: Mapping[str, str]) -> tuple[str, ...]:
    """REPOVAULT_ENCRYPT_RECIPIENTS: age public keys, comma-separated, as given (not lowered:
    an ssh key is case-sensitive)."""
    raw = env.get("REPOVAULT_ENCRYPT_RECIPIENTS", "")
    recipients = tuple(part.strip() for part in raw.split(",") if part.strip())
    for recipient in recipients:
        if not recipient.startswith(("age1", "ssh-ed25519 ", "ssh-rsa ")):
            raise ConfigError(
                f"REPOVAULT_ENCRYPT_RECIPIENTS has {recipient[:24]!r}, which is not an age "
                "public key (age1..., or an ssh-ed25519/ssh-rsa public key); `age-keygen -y "
                "IDENTITY_FILE` prints the one of an identity"
            )
    return recipients


def configured_secrets(env: Mapping[str, str] | None = None) -> tuple[str, str, str]:
    """The values of the secret settings, GITHUB_TOKEN, REPOVAULT_SSH_KEY and GITLAB_TOKEN (""
    when unset).

    Read without validating the other settings: masking must work, and never fail, even when
    another variable is unusable."""
    env = os.environ if env is None else env
    return (
        _str(env, "GITHUB_TOKEN", ""),
        _str(env, "REPOVAULT_SSH_KEY", ""),
        _str(env, "GITLAB_TOKEN", ""),
    )
