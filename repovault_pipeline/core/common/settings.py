"""RepoVault configuration, read from the environment (docs/contract.md, "Environment").

`Settings` is a pydantic-settings model: each field carries its variable's name
(`validation_alias`), its default and its check (the types of `setting_types.py`), and
`Settings.from_env` is the one way the variables are read. Read at the moment they are needed
rather than at import, so a long-lived code server picks up the environment it was started
with and tests can point one process at several servers. `Settings(...)` alone is the
defaults with the fields given, whatever the environment. The Dagster resources
(`resources.py`) show every variable as a field and build their settings with
`from_env(overrides=...)`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from repovault_pipeline.core.common.setting_types import (
    AtLeast0,
    AtLeast1,
    AtLeast2,
    BaseUrl,
    BucketPrefix,
    Flag,
    ListOrDefault,
    LoweredList,
    OptionalText,
    Recipients,
    Text,
    TextPath,
    UnusableValue,
    Urls,
    UserPath,
    names_of,
    one_of,
    spelled_as,
)


class ConfigError(ValueError):
    """A setting has a value RepoVault cannot use; the message says which and how to fix it."""


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
# What an operator can be told about (core/notify, docs/contract.md "Notifications").
NOTIFY_EVENTS = ("failed", "partial", "unrestorable", "source_error", "stale", "daily")
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


def _default_home() -> Path:
    """REPOVAULT_HOME unset: the checkout's `.repovault` when RepoVault runs from a source
    checkout (the folder `make run` uses, so a CLI called from anywhere finds the same vault),
    else `~/.local/share/repovault` for an installed package."""
    if (_CHECKOUT / "setup.py").is_file() and (_CHECKOUT / "repovault_pipeline").is_dir():
        return _CHECKOUT / ".repovault"
    return Path.home() / ".local" / "share" / "repovault"


# Variables whose blank value is an empty list, not the default: nothing allowed.
_BLANK_IS_EMPTY = frozenset({"REPOVAULT_ALLOWED_HOSTS", "REPOVAULT_ALLOWED_SCHEMES"})


def _under_home(*parts: str) -> Any:
    """A default under REPOVAULT_HOME (the one set, else the default home)."""
    return lambda data: Path(data.get("home", _default_home()), *parts)


class Settings(BaseSettings):
    """Every setting: its variable, its default, its check. Field order is the order in which
    a wrong value is reported when several are."""

    model_config = SettingsConfigDict(
        frozen=True, validate_by_name=True, extra="ignore", case_sensitive=True
    )

    home: Annotated[UserPath, AfterValidator(Path.absolute)] = Field(
        validation_alias="REPOVAULT_HOME", default_factory=_default_home
    )
    bucket_prefix: BucketPrefix = Field(validation_alias="REPOVAULT_BUCKET_PREFIX", default="repo-")
    git_timeout_s: AtLeast1 = Field(
        validation_alias="REPOVAULT_GIT_TIMEOUT_S", default=GIT_TIMEOUT_S
    )
    s3_endpoint: OptionalText = Field(validation_alias="REPOVAULT_S3_ENDPOINT", default=None)
    # Server-side encryption asked of every write: AES256 or aws:kms.
    s3_sse: Annotated[str | None, spelled_as(S3_SSE)] = Field(
        validation_alias="REPOVAULT_S3_SSE", default=None
    )
    s3_sse_kms_key_id: OptionalText = Field(
        validation_alias="REPOVAULT_S3_SSE_KMS_KEY_ID", default=None
    )
    # age public keys (age1..., ssh-ed25519 ...): bundles, LFS objects and metadata are
    # encrypted to them before upload (docs/contract.md, "Encryption at rest").
    encrypt_recipients: Recipients = Field(
        validation_alias="REPOVAULT_ENCRYPT_RECIPIENTS", default=()
    )
    decrypt_identity: UserPath | None = Field(  # restore and verify
        validation_alias="REPOVAULT_DECRYPT_IDENTITY", default=None, repr=False
    )
    kafka_bootstrap: Text = Field(
        validation_alias="REPOVAULT_KAFKA_BOOTSTRAP", default="localhost:9092"
    )
    topic_pending: Text = Field(validation_alias="REPOVAULT_TOPIC_PENDING", default="pendientes")
    topic_in_progress: Text = Field(
        validation_alias="REPOVAULT_TOPIC_IN_PROGRESS", default="en_proceso"
    )
    topic_completed: Text = Field(
        validation_alias="REPOVAULT_TOPIC_COMPLETED", default="completados"
    )
    topic_rejected: Text = Field(validation_alias="REPOVAULT_TOPIC_REJECTED", default="rechazados")
    topic_partitions: AtLeast1 = Field(validation_alias="REPOVAULT_TOPIC_PARTITIONS", default=3)
    topic_replication: AtLeast1 = Field(validation_alias="REPOVAULT_TOPIC_REPLICATION", default=1)
    s3_region: Text = Field(
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"), default="us-east-1"
    )
    local_store: TextPath = Field(
        validation_alias="REPOVAULT_LOCAL_STORE", default_factory=_under_home("store")
    )
    db_url: Text = Field(
        validation_alias="REPOVAULT_DB_URL",
        default_factory=lambda data: f"sqlite:///{_under_home('lineage.db')(data)}",
    )
    db_timeout_s: AtLeast1 = Field(validation_alias="REPOVAULT_DB_TIMEOUT_S", default=DB_TIMEOUT_S)
    s3_timeout_s: AtLeast1 = Field(validation_alias="REPOVAULT_S3_TIMEOUT_S", default=S3_TIMEOUT_S)
    allowed_hosts: LoweredList = Field(
        validation_alias="REPOVAULT_ALLOWED_HOSTS", default=("github.com",)
    )
    allowed_schemes: LoweredList = Field(
        validation_alias="REPOVAULT_ALLOWED_SCHEMES", default=("https", "ssh")
    )
    github_token: OptionalText = Field(validation_alias="GITHUB_TOKEN", default=None, repr=False)
    ssh_key: TextPath | None = Field(validation_alias="REPOVAULT_SSH_KEY", default=None)
    ssh_known_hosts: TextPath = Field(
        validation_alias="REPOVAULT_SSH_KNOWN_HOSTS", default_factory=_under_home("ssh_known_hosts")
    )
    max_repo_mb: AtLeast1 = Field(validation_alias="REPOVAULT_MAX_REPO_MB", default=2048)
    keep_snapshots: AtLeast1 = Field(validation_alias="REPOVAULT_KEEP_SNAPSHOTS", default=10)
    # Retention by age beside the count (core/vault/policy.py): the newest snapshot of each of
    # the newest D days, W ISO weeks, M months holding one. 0: by count alone.
    keep_daily: AtLeast0 = Field(validation_alias="REPOVAULT_KEEP_DAILY", default=0)
    keep_weekly: AtLeast0 = Field(validation_alias="REPOVAULT_KEEP_WEEKLY", default=0)
    keep_monthly: AtLeast0 = Field(validation_alias="REPOVAULT_KEEP_MONTHLY", default=0)
    # Incremental bundles written on a full one before the next full one; 0: every bundle is full.
    chain_max: AtLeast0 = Field(validation_alias="REPOVAULT_CHAIN_MAX", default=10)
    trending_url: Text = Field(
        validation_alias="REPOVAULT_TRENDING_URL", default="https://github.com/trending"
    )
    github_api: Text = Field(
        validation_alias="REPOVAULT_GITHUB_API", default="https://api.github.com"
    )
    trending_language: OptionalText = Field(
        validation_alias="REPOVAULT_TRENDING_LANGUAGE", default=None
    )
    host_concurrency: AtLeast1 = Field(validation_alias="REPOVAULT_HOST_CONCURRENCY", default=4)
    trending_since: Annotated[str, one_of(TRENDING_PERIODS)] = Field(
        validation_alias="REPOVAULT_TRENDING_SINCE", default=TRENDING_PERIODS[0]
    )
    work_dir: TextPath = Field(
        validation_alias="REPOVAULT_WORK_DIR", default=Path(tempfile.gettempdir()) / "repovault"
    )
    # Kept bare mirrors, fetched instead of cloned afresh (core/vault/mirror.py); None: off.
    mirror_dir: TextPath | None = Field(validation_alias="REPOVAULT_MIRROR_DIR", default=None)
    mirror_max_idle_d: AtLeast1 = Field(validation_alias="REPOVAULT_MIRROR_MAX_IDLE_D", default=30)
    upload_workers: AtLeast1 = Field(validation_alias="REPOVAULT_UPLOAD_WORKERS", default=16)
    # At most one upload progress line this often (0: every object).
    progress_every_s: AtLeast0 = Field(validation_alias="REPOVAULT_PROGRESS_EVERY_S", default=2)
    injector_batch: AtLeast1 = Field(validation_alias="REPOVAULT_INJECTOR_BATCH", default=500)
    republish_after_s: AtLeast0 = Field(validation_alias="REPOVAULT_REPUBLISH_AFTER_S", default=900)
    run_timeout_s: AtLeast1 = Field(
        validation_alias="REPOVAULT_RUN_TIMEOUT_S",
        default_factory=lambda data: (
            RUN_TIMEOUT_GIT_TIMEOUTS * data.get("git_timeout_s", GIT_TIMEOUT_S)
        ),
    )
    retry_delay_s: AtLeast0 = Field(validation_alias="REPOVAULT_RETRY_DELAY_S", default=5)
    lease_ttl_s: AtLeast2 = Field(validation_alias="REPOVAULT_LEASE_TTL_S", default=120)
    lease_wait_s: AtLeast0 = Field(validation_alias="REPOVAULT_LEASE_WAIT_S", default=300)
    # reconcile_sensor fails a started run whose lease went this many TTLs without a renewal.
    orphan_after_ttls: AtLeast1 = Field(validation_alias="REPOVAULT_ORPHAN_AFTER_TTLS", default=3)
    gitlab_api: Text = Field(
        validation_alias="REPOVAULT_GITLAB_API", default="https://gitlab.com/api/v4"
    )
    gitlab_token: OptionalText = Field(validation_alias="GITLAB_TOKEN", default=None, repr=False)
    # Gitea/Forgejo (Codeberg unless set) and Bitbucket Cloud: tracked sources, metadata, clones.
    gitea_api: Text = Field(
        validation_alias="REPOVAULT_GITEA_API", default="https://codeberg.org/api/v1"
    )
    gitea_token: OptionalText = Field(validation_alias="GITEA_TOKEN", default=None, repr=False)
    bitbucket_api: Text = Field(
        validation_alias="REPOVAULT_BITBUCKET_API", default="https://api.bitbucket.org/2.0"
    )
    bitbucket_username: OptionalText = Field(validation_alias="BITBUCKET_USERNAME", default=None)
    bitbucket_app_password: OptionalText = Field(
        validation_alias="BITBUCKET_APP_PASSWORD", default=None, repr=False
    )
    keep_metadata: Annotated[str, one_of(KEEP_METADATA)] = Field(
        validation_alias="REPOVAULT_KEEP_METADATA", default=KEEP_METADATA[0]
    )
    metadata_full_every_d: AtLeast1 = Field(
        validation_alias="REPOVAULT_METADATA_FULL_EVERY_D", default=7
    )
    refresh_interval_h: AtLeast1 = Field(
        validation_alias="REPOVAULT_REFRESH_INTERVAL_H", default=24
    )
    minio_console_url: BaseUrl = Field(validation_alias="REPOVAULT_MINIO_CONSOLE_URL", default=None)
    keep_lfs: Flag = Field(validation_alias="REPOVAULT_KEEP_LFS", default=True)
    keep_wiki: Flag = Field(validation_alias="REPOVAULT_KEEP_WIKI", default=True)
    # Dagster's instance (DAGSTER_HOME; `make run` keeps it in REPOVAULT_HOME/dagster_home): the
    # CLI reads its run queue to say why a request waits and how far a run has come.
    dagster_home: TextPath = Field(
        validation_alias="DAGSTER_HOME", default_factory=_under_home("dagster_home")
    )
    # The HTTP API (`repovault serve`): URLs one token may submit per minute, and the Keycloak
    # realm whose bearer tokens it accepts beside its own (None: API tokens only).
    api_submit_per_minute: AtLeast1 = Field(
        validation_alias="REPOVAULT_API_SUBMIT_PER_MINUTE", default=1000
    )
    oidc_issuer: BaseUrl = Field(validation_alias="REPOVAULT_OIDC_ISSUER", default=None)
    # None: the issuer's /protocol/openid-connect/certs
    oidc_jwks_url: OptionalText = Field(validation_alias="REPOVAULT_OIDC_JWKS_URL", default=None)
    # A token must be meant for one of them.
    oidc_audience: ListOrDefault = Field(
        validation_alias="REPOVAULT_OIDC_AUDIENCE", default=("repovault-api",)
    )
    # Notifications (core/notify): Apprise URLs (they hold tokens and passwords: never shown),
    # and the events sent to them.
    notify_urls: Urls = Field(validation_alias="REPOVAULT_NOTIFY_URLS", default=(), repr=False)
    notify_events: Annotated[tuple[str, ...], NoDecode, names_of(NOTIFY_EVENTS)] = Field(
        validation_alias="REPOVAULT_NOTIFY_EVENTS", default=NOTIFY_EVENTS
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: the environment comes in through `from_env`, which names
        the one it reads."""
        return (init_settings,)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] = {}
    ) -> Settings:
        """The settings of `env` (default: the process environment); `overrides` are values
        by variable name that win over it (a Dagster resource's fields), None skipped. An
        unusable value raises the ConfigError that names it."""
        given = {name: value for name, value in overrides.items() if value is not None}
        # An unset or blank variable takes its default (a blank list variable is empty).
        values = {
            name: value
            for name, value in {**(os.environ if env is None else env), **given}.items()
            if name in VARIABLES and (value.strip() or name in _BLANK_IS_EMPTY)
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of `field` (the first one read, when there are two)."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            alias = alias.choices[0]
        assert isinstance(alias, str)
        return alias

    @model_validator(mode="after")
    def _sse_can_be_honoured(self) -> Settings:
        """REPOVAULT_S3_SSE and REPOVAULT_S3_SSE_KMS_KEY_ID, checked against each other and
        the store: a setting that cannot be honoured is refused, never ignored."""
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ConfigError(
                "REPOVAULT_S3_SSE_KMS_KEY_ID is set but REPOVAULT_S3_SSE is not aws:kms; "
                "set REPOVAULT_S3_SSE=aws:kms or unset the key id"
            )
        if self.s3_sse and not self.s3_endpoint:
            raise ConfigError(
                f"REPOVAULT_S3_SSE={self.s3_sse} needs an S3 store, but REPOVAULT_S3_ENDPOINT is "
                "unset (the local folder store has no server-side encryption); set the endpoint "
                "or unset REPOVAULT_S3_SSE"
            )
        return self

    @property
    def topics(self) -> Topics:
        return Topics(
            pending=self.topic_pending,
            in_progress=self.topic_in_progress,
            completed=self.topic_completed,
            rejected=self.topic_rejected,
            partitions=self.topic_partitions,
            replication_factor=self.topic_replication,
        )

    @property
    def keep(self) -> Keep:
        return Keep(lfs=self.keep_lfs, wiki=self.keep_wiki)


# Every variable Settings reads, AWS_DEFAULT_REGION included.
VARIABLES = frozenset(
    name
    for info in Settings.model_fields.values()
    for name in (
        info.validation_alias.choices
        if isinstance(info.validation_alias, AliasChoices)
        else [info.validation_alias]
    )
    if isinstance(name, str)
)


def _config_error(exc: ValidationError) -> ConfigError:
    """The first error of a validation as the one line users see, naming the variable."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    name = str(error["loc"][0]) if error["loc"] else ""
    if name in Settings.model_fields:
        name = Settings.variable(name)
    if isinstance(cause, UnusableValue):
        return ConfigError(f"{name}{cause}")
    return ConfigError(f"{name}: {error['msg']}")


SECRET_VARIABLES = (
    "GITHUB_TOKEN",
    "REPOVAULT_SSH_KEY",
    "GITLAB_TOKEN",
    "GITEA_TOKEN",
    "BITBUCKET_APP_PASSWORD",
)


def configured_secrets(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The values of the secret settings (`SECRET_VARIABLES`, "" when unset).

    Read without validating the other settings: masking must work, and never fail, even when
    another variable is unusable."""
    env = os.environ if env is None else env
    return tuple(env.get(name, "").strip() for name in SECRET_VARIABLES)
