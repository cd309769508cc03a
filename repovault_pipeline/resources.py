"""Dagster resources: thin handles on the core, carrying every setting as a field.

Each field holds one variable of docs/contract.md (its description names it), grouped by the
domain that uses it: `s3` and `vault` (object store, snapshots, leases), `git` (clones),
`lineage` (database), `kafka` (broker, topics, injector), `sources` (forges, trending,
metadata), `notify` (notifications) and `api` (HTTP API, CLI). `from_environment` sets a field
to `EnvVar(NAME)` when the variable is set where the code location loads, so the UI's resource
page shows its name, never its value; an unset variable's field stays None (a field given the
`EnvVar` of an unset variable would fail the load) and takes the default of
`core.common.settings.Settings`. The settings are built once from the fields, when a run, sensor
tick or schedule tick initializes the resource (`setup_for_execution`); store, engine and
producer are closed when it ends.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from .core.common.settings import Settings
from .core.intake.kafka import KafkaGateway
from .core.lineage.requests import LineageStore, open_lineage
from .core.sources.fleet import FleetStore
from .core.vault.s3 import s3_client_config, s3_session
from .core.vault.snapshot import SnapshotWriter
from .core.vault.store import ObjectStore, open_store

_Resource = TypeVar("_Resource", bound=ConfigurableResource)


_SETTING_OF = {Settings.variable(field): field for field in Settings.model_fields}


def _default_of(name: str) -> str:
    """The variable's default as the UI shows it beside the name."""
    info = Settings.model_fields.get(_SETTING_OF.get(name, ""))
    if info is None or info.default_factory is not None:
        return "see docs/contract.md, Environment"
    default = info.get_default()
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return ",".join(default) or "unset"
    return "unset" if default is None else str(default)


def _variable(name: str, secret: bool = False) -> Any:
    """A field holding the text of the variable `name` (None: unset, its default)."""
    shown = "a secret: only ever EnvVar" if secret else f"default: {_default_of(name)}"
    return Field(
        default=None, description=f"{name} ({shown})", json_schema_extra={"variable": name}
    )


def variables(resource_cls: type[ConfigurableResource]) -> dict[str, str]:
    """The resource's fields that hold a variable, by field name."""
    return {
        field: str(info.json_schema_extra["variable"])
        for field, info in resource_cls.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and "variable" in info.json_schema_extra
    }


def from_environment(resource_cls: type[_Resource], **nested: Any) -> _Resource:
    """The resource with `EnvVar(NAME)` in each field whose variable is set here (resolved when
    a run or tick starts); `nested` are the resources it depends on."""
    names = variables(resource_cls).items()
    fields = {field: EnvVar(name) for field, name in names if EnvVar(name).get_value() is not None}
    return resource_cls(**fields, **nested)


def _overrides(resource: ConfigurableResource) -> dict[str, str | None]:
    """The variables set on `resource` and on the resources it depends on, by name."""
    values: dict[str, str | None] = {}
    for field in type(resource).model_fields:
        if isinstance(value := getattr(resource, field), ConfigurableResource):
            values.update(_overrides(value))
    for field, name in variables(type(resource)).items():
        value = getattr(resource, field)
        values[name] = value.get_value() if isinstance(value, EnvVar) else value
    return values


class _SettingsResource(ConfigurableResource):
    """A resource whose fields are settings (over the environment's, for a field left None)."""

    _settings: Settings | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        """The run's (or tick's) settings, read once."""
        if self._settings is None:
            self._settings = Settings.from_env(overrides=_overrides(self))
        return self._settings

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.settings()


class VaultS3Resource(S3Resource):
    """dagster-aws's S3 resource (endpoint REPOVAULT_S3_ENDPOINT, region and credentials from
    AWS_*), with the client RepoVault needs: path-style addressing for MinIO, one connection
    per upload worker, bounded timeouts."""

    endpoint_url: str | None = _variable("REPOVAULT_S3_ENDPOINT")
    region_name: str | None = _variable("AWS_REGION")
    aws_access_key_id: str | None = _variable("AWS_ACCESS_KEY_ID")
    aws_secret_access_key: str | None = _variable("AWS_SECRET_ACCESS_KEY", secret=True)

    def get_client(self) -> Any:
        """The client `vault` uses, for code that asks dagster-aws's way (`s3.get_client()`)."""
        return self.client_for(Settings.from_env(overrides=_overrides(self)))

    def client_for(self, settings: Settings) -> Any:
        """A boto3 S3 client; unset fields take `settings` (endpoint, region) or boto3's own
        credential chain."""
        session = s3_session(self.profile_name)
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url or settings.s3_endpoint,
            region_name=self.region_name or settings.s3_region,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=s3_client_config(settings.upload_workers + 4, settings.s3_timeout_s),
        )


class GitResource(_SettingsResource):
    """Clones: which URLs may be cloned, with which credentials, how big and for how long, and
    what a run keeps beside the history. `vault`'s settings take these fields."""

    allowed_hosts: str | None = _variable("REPOVAULT_ALLOWED_HOSTS")
    allowed_schemes: str | None = _variable("REPOVAULT_ALLOWED_SCHEMES")
    github_token: str | None = _variable("GITHUB_TOKEN", secret=True)
    ssh_key: str | None = _variable("REPOVAULT_SSH_KEY", secret=True)
    ssh_known_hosts: str | None = _variable("REPOVAULT_SSH_KNOWN_HOSTS")
    max_repo_mb: str | None = _variable("REPOVAULT_MAX_REPO_MB")
    git_timeout_s: str | None = _variable("REPOVAULT_GIT_TIMEOUT_S")
    run_timeout_s: str | None = _variable("REPOVAULT_RUN_TIMEOUT_S")
    retry_delay_s: str | None = _variable("REPOVAULT_RETRY_DELAY_S")
    work_dir: str | None = _variable("REPOVAULT_WORK_DIR")
    mirror_dir: str | None = _variable("REPOVAULT_MIRROR_DIR")
    mirror_max_idle_d: str | None = _variable("REPOVAULT_MIRROR_MAX_IDLE_D")
    host_concurrency: str | None = _variable("REPOVAULT_HOST_CONCURRENCY")
    keep_lfs: str | None = _variable("REPOVAULT_KEEP_LFS")
    keep_wiki: str | None = _variable("REPOVAULT_KEEP_WIKI")


class SourcesResource(_SettingsResource):
    """The forges and the trending page: APIs, token, metadata and refresh rhythm. `vault`'s
    settings take these fields."""

    github_api: str | None = _variable("REPOVAULT_GITHUB_API")
    gitlab_api: str | None = _variable("REPOVAULT_GITLAB_API")
    gitlab_token: str | None = _variable("GITLAB_TOKEN", secret=True)
    gitea_api: str | None = _variable("REPOVAULT_GITEA_API")
    gitea_token: str | None = _variable("GITEA_TOKEN", secret=True)
    bitbucket_api: str | None = _variable("REPOVAULT_BITBUCKET_API")
    bitbucket_username: str | None = _variable("BITBUCKET_USERNAME")
    bitbucket_app_password: str | None = _variable("BITBUCKET_APP_PASSWORD", secret=True)
    trending_url: str | None = _variable("REPOVAULT_TRENDING_URL")
    trending_language: str | None = _variable("REPOVAULT_TRENDING_LANGUAGE")
    trending_since: str | None = _variable("REPOVAULT_TRENDING_SINCE")
    keep_metadata: str | None = _variable("REPOVAULT_KEEP_METADATA")
    metadata_full_every_d: str | None = _variable("REPOVAULT_METADATA_FULL_EVERY_D")
    refresh_interval_h: str | None = _variable("REPOVAULT_REFRESH_INTERVAL_H")


class ApiResource(_SettingsResource):
    """The HTTP API and the CLI (`repovault serve`, `repovault status`): they run outside
    Dagster and read the environment; shown here so every variable is on one page."""

    api_submit_per_minute: str | None = _variable("REPOVAULT_API_SUBMIT_PER_MINUTE")
    oidc_issuer: str | None = _variable("REPOVAULT_OIDC_ISSUER")
    oidc_jwks_url: str | None = _variable("REPOVAULT_OIDC_JWKS_URL")
    oidc_audience: str | None = _variable("REPOVAULT_OIDC_AUDIENCE")
    dagster_home: str | None = _variable("DAGSTER_HOME")


class VaultResource(_SettingsResource):
    """The object store: S3/MinIO through `s3`, or the local folder `local_store` when no S3
    endpoint is set; buckets are named `bucket_prefix` + repository. Its settings also take the
    fields of `s3`, `git` and `sources`: runs clone, upload and keep forge metadata through it,
    the fleet sensors check repositories through it."""

    s3: VaultS3Resource
    git: GitResource
    sources: SourcesResource
    home: str | None = _variable("REPOVAULT_HOME")
    local_store: str | None = _variable("REPOVAULT_LOCAL_STORE")
    bucket_prefix: str | None = _variable("REPOVAULT_BUCKET_PREFIX")
    s3_timeout_s: str | None = _variable("REPOVAULT_S3_TIMEOUT_S")
    s3_sse: str | None = _variable("REPOVAULT_S3_SSE")
    s3_sse_kms_key_id: str | None = _variable("REPOVAULT_S3_SSE_KMS_KEY_ID")
    encrypt_recipients: str | None = _variable("REPOVAULT_ENCRYPT_RECIPIENTS")
    decrypt_identity: str | None = _variable("REPOVAULT_DECRYPT_IDENTITY", secret=True)
    keep_snapshots: str | None = _variable("REPOVAULT_KEEP_SNAPSHOTS")
    keep_daily: str | None = _variable("REPOVAULT_KEEP_DAILY")
    keep_weekly: str | None = _variable("REPOVAULT_KEEP_WEEKLY")
    keep_monthly: str | None = _variable("REPOVAULT_KEEP_MONTHLY")
    chain_max: str | None = _variable("REPOVAULT_CHAIN_MAX")
    upload_workers: str | None = _variable("REPOVAULT_UPLOAD_WORKERS")
    progress_every_s: str | None = _variable("REPOVAULT_PROGRESS_EVERY_S")
    lease_ttl_s: str | None = _variable("REPOVAULT_LEASE_TTL_S")
    lease_wait_s: str | None = _variable("REPOVAULT_LEASE_WAIT_S")
    orphan_after_ttls: str | None = _variable("REPOVAULT_ORPHAN_AFTER_TTLS")
    minio_console_url: str | None = _variable("REPOVAULT_MINIO_CONSOLE_URL")
    _store: ObjectStore | None = PrivateAttr(default=None)

    def store(self) -> ObjectStore:
        """The run's store (one boto3 client per run: building one costs ~0.1 s)."""
        if self._store is None:
            settings = self.settings()
            client = self.s3.client_for(settings) if settings.s3_endpoint else None
            self._store = open_store(settings, client)
        return self._store

    def writer(self, logger: logging.Logger) -> SnapshotWriter:
        return SnapshotWriter(self.settings(), self.store(), logger)


class LineageResource(_SettingsResource):
    """The lineage tables (`repo_requests`, ...) at `db_url`."""

    db_url: str | None = _variable("REPOVAULT_DB_URL")
    db_timeout_s: str | None = _variable("REPOVAULT_DB_TIMEOUT_S")
    _store: LineageStore | None = PrivateAttr(default=None)

    def store(self) -> LineageStore:
        """One engine (and one table check) per run or tick."""
        if self._store is None:
            settings = self.settings()
            self._store = open_lineage(settings.db_url, settings.db_timeout_s)
        return self._store

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def fleet(self) -> FleetStore:
        """`repo_sources` and `repo_state`, on the same database."""
        return FleetStore(self.store().engine)


class NotifyResource(_SettingsResource):
    """Where notifications go (Apprise URLs: a secret, they hold tokens) and which are sent."""

    notify_urls: str | None = _variable("REPOVAULT_NOTIFY_URLS", secret=True)
    notify_events: str | None = _variable("REPOVAULT_NOTIFY_EVENTS")


class KafkaResource(_SettingsResource):
    """The broker at `bootstrap`, the four topics and how they are created, and the
    injector's pace."""

    bootstrap: str | None = _variable("REPOVAULT_KAFKA_BOOTSTRAP")
    topic_pending: str | None = _variable("REPOVAULT_TOPIC_PENDING")
    topic_in_progress: str | None = _variable("REPOVAULT_TOPIC_IN_PROGRESS")
    topic_completed: str | None = _variable("REPOVAULT_TOPIC_COMPLETED")
    topic_rejected: str | None = _variable("REPOVAULT_TOPIC_REJECTED")
    topic_partitions: str | None = _variable("REPOVAULT_TOPIC_PARTITIONS")
    topic_replication: str | None = _variable("REPOVAULT_TOPIC_REPLICATION")
    injector_batch: str | None = _variable("REPOVAULT_INJECTOR_BATCH")
    republish_after_s: str | None = _variable("REPOVAULT_REPUBLISH_AFTER_S")
    _gateway: KafkaGateway | None = PrivateAttr(default=None)

    def gateway(self) -> KafkaGateway:
        """The run's (or tick's) gateway: one producer for all its status events, closed when
        the run ends. Callers do not close it."""
        if self._gateway is None:
            self._gateway = KafkaGateway(self.settings())
        return self._gateway

    def publish_status(self, topic: str, key: str, event: bytes, logger: logging.Logger) -> None:
        """Best effort (see `KafkaGateway.publish_status`)."""
        self.gateway().publish_status(topic, key, event, logger)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None
