"""`repo_archive`: one partition per repository, computed by clone_repo -> upload_snapshot ->
record_lineage. The work is in `core/vault/snapshot.py`, the request's life (its row and its
status events) in `core/intake/lifecycle.py`; these ops add retries for transient failures and
the materialization metadata."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from dagster import (
    AssetExecutionContext,
    Backoff,
    Failure,
    HookContext,
    Jitter,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    RetryPolicy,
    failure_hook,
    graph_asset,
    op,
)
from sqlalchemy.exc import SQLAlchemyError

from ..core.common.errors import ArchiveError, TransientError
from ..core.common.identity import InvalidRepoUrl
from ..core.common.redact import mask_secrets
from ..core.common.settings import Settings
from ..core.intake.lifecycle import RequestLifecycle
from ..core.intake.runs import (
    RunRequestInfo,
    default_clone_url,
    default_url_hint,
    missing_run_tags,
    outcome_metadata,
    request_of_run,
    resolve_clone_ref,
)
from ..core.lineage.requests import reasons_line
from ..core.lineage.stats import bucket_link, sizes_line
from ..core.vault.outcome import ArchiveResult
from ..core.vault.prepare import Prepared, discard
from ..core.vault.workdir import remove_work_dir
from ..partitions import repositories
from ..resources import KafkaResource, LineageResource, VaultResource
from .check_records import failed_verdicts, forget_unexecuted_check

# The ops hand each other a local clone and a result within one run process; nothing reads them
# later, so they stay in memory (definitions.py registers this key) instead of being pickled
# under the instance's storage/ folder. A step retry re-runs in the same process and finds its
# input there.
IN_MEMORY = "in_memory_io_manager"

# Transient failures (network, S3 5xx) raise plainly and are retried after
# REPOVAULT_RETRY_DELAY_S, doubling each time; permanent ones raise Failure(allow_retries=False)
# and fail the run at once with their reason. Like the run timeout (jobs.py), the delay is fixed
# when the code location loads.
TRANSIENT_RETRY = RetryPolicy(
    max_retries=3,
    delay=Settings.from_env().retry_delay_s,
    backoff=Backoff.EXPONENTIAL,
    jitter=Jitter.PLUS_MINUS,
)


def _request(context: OpExecutionContext | HookContext) -> RunRequestInfo:
    run = context.instance.get_run_by_id(context.run_id)
    return request_of_run(run.tags if run else {}, context.run_id)


def _complete_run_tags(context: OpExecutionContext, settings: Settings) -> None:
    """Give the run the host and maximum-runtime tags it lacks. The run coordinator adds them
    when a run is queued; a run that was never queued (`dagster asset materialize` executes in
    its own process) gets them here, so run monitoring and the per-host count see it."""
    missing = missing_run_tags(context.run.tags, settings)
    if missing:
        context.instance.add_run_tags(context.run_id, missing)
        context.log.info(f"tagged the run {missing} (it was not submitted through the run queue)")


def run_requests(
    context: OpExecutionContext | AssetExecutionContext | HookContext,
    lineage: LineageResource,
    kafka: KafkaResource,
) -> RequestLifecycle:
    """The run's requests, recorded in lineage and announced through the run's gateway."""
    gateway = kafka.gateway()
    return RequestLifecycle(
        lineage.store(), gateway, gateway.settings.topics, lineage.fleet(), context.log
    )


@contextmanager
def archive_errors(
    context: OpExecutionContext | AssetExecutionContext,
    requests: Callable[[], RequestLifecycle] | None = None,
    request_id: str | None = None,
    hint: str | None = None,
) -> Iterator[None]:
    """Permanent errors fail at once with their one-line reason; transient ones are retried, and
    the request's row (when given) says which attempt failed and why meanwhile. `hint` is added
    to either reason (what the operator can do about it)."""
    try:
        yield
    except TransientError as exc:
        reason = mask_secrets(f"{exc}; {hint}" if hint else str(exc))
        attempt = context.retry_number + 1
        context.log.warning(f"transient failure (attempt {attempt}): {reason}")
        if requests is not None and request_id and attempt <= TRANSIENT_RETRY.max_retries:
            _note_retry(context, requests, request_id, attempt, reason)
        if hint:
            raise TransientError(reason) from exc
        raise
    except (InvalidRepoUrl, ArchiveError) as exc:
        reason = f"{exc}; {hint}" if hint else str(exc)
        raise Failure(description=mask_secrets(reason), allow_retries=False) from None


def _note_retry(
    context: OpExecutionContext | AssetExecutionContext,
    requests: Callable[[], RequestLifecycle],
    request_id: str,
    attempt: int,
    reason: str,
) -> None:
    """Best effort: a lineage outage must not turn a retry into a failure."""
    try:
        requests().retrying(request_id, attempt, TRANSIENT_RETRY.max_retries + 1, reason)
    except SQLAlchemyError as exc:
        context.log.warning(f"could not note the retry in lineage ({type(exc).__name__})")


@op(out=Out(Prepared, io_manager_key=IN_MEMORY), retry_policy=TRANSIENT_RETRY, tags={"kind": "git"})
def clone_repo(
    context: OpExecutionContext,
    vault: VaultResource,
    lineage: LineageResource,
    kafka: KafkaResource,
) -> Prepared:
    """Clone the partition's repository, bundle it and list HEAD, unless nothing changed."""
    repo_id = context.partition_key
    request = _request(context)
    settings = vault.settings()
    _complete_run_tags(context, settings)
    requests = run_requests(context, lineage, kafka)
    run_record = context.instance.get_run_record_by_id(context.run_id)
    created_at = request.requested_at or (run_record.create_timestamp if run_record else None)
    url = request.repo_url or requests.lineage.last_url(repo_id)
    requests.start(
        request.request_id,
        url or default_clone_url(repo_id),
        repo_id,
        request.source,
        context.run_id,
        created_at=created_at,
        retry_number=context.retry_number,
    )
    hint = None if url else default_url_hint(repo_id)
    with archive_errors(context, lambda: requests, request.request_id, hint):
        ref = resolve_clone_ref(repo_id, url, settings)
        keep = request.keep_for(settings)
        context.log.info(
            f"archiving {ref.repo_id} from {mask_secrets(ref.url)}"
            f" (keeping LFS objects {keep.lfs}, wiki {keep.wiki})"
        )
        return vault.writer(context.log).prepare(
            ref,
            settings.work_dir / context.run_id,
            request_id=request.request_id,
            run_id=context.run_id,
            keep=keep,
            force=request.forced(),
            damaged=failed_verdicts(context.instance, repo_id),
        )


@op(
    out=Out(ArchiveResult, io_manager_key=IN_MEMORY),
    retry_policy=TRANSIENT_RETRY,
    tags={"kind": "s3"},
)
def upload_snapshot(
    context: OpExecutionContext,
    vault: VaultResource,
    lineage: LineageResource,
    kafka: KafkaResource,
    prepared: Prepared,
) -> Output[ArchiveResult]:
    """Write the snapshot: bundle, incremental tree/, manifest, latest.json, retention.

    The outcome goes into this step's output metadata, so it is in Dagster's event log even
    when `record_lineage` cannot write it (reconcile_sensor reads it from there)."""
    clones = [p for p in (prepared, prepared.wiki) if p is not None and not p.unchanged]
    if any(not p.repo_path.is_dir() for p in clones):
        raise Failure(
            description="the clone of this run is gone from local disk; re-execute the run",
            allow_retries=False,
        )
    requests = partial(run_requests, context, lineage, kafka)  # the database only on a retry
    with archive_errors(context, requests, _request(context).request_id):
        result = vault.writer(context.log).upload(prepared)
    discard(prepared)
    return Output(result, metadata=outcome_metadata(result))


@op(
    out=Out(dict, io_manager_key=IN_MEMORY), retry_policy=TRANSIENT_RETRY, tags={"kind": "postgres"}
)
def record_lineage(
    context: OpExecutionContext,
    vault: VaultResource,
    lineage: LineageResource,
    kafka: KafkaResource,
    result: ArchiveResult,
) -> Output[dict]:
    """Close the request's row, announce the outcome on `completados`, and publish what the run
    did as materialization metadata. The status is `partial` when a part the request asked to
    keep is missing (LFS objects, the wiki); `repo_metadata`, which runs after this, turns it
    `partial` itself if the forge metadata then fails."""
    request = _request(context)
    run_requests(context, lineage, kafka).finish(request.request_id, context.run_id, result)
    location = bucket_link(vault.settings(), vault.store(), result.bucket)
    return Output(
        result.to_dict(),
        metadata={
            "outcome": result.status,
            "reasons": reasons_line(result.reasons) or "none",
            "head_commit": result.head_commit,
            "snapshot_id": result.snapshot_id or "",
            "default_branch": result.default_branch,
            "bytes_uploaded": MetadataValue.int(result.bytes_uploaded),
            "files_uploaded": MetadataValue.int(result.files_uploaded),
            "files_deleted": MetadataValue.int(result.files_deleted),
            "tree_files": MetadataValue.int(result.tree_files),
            "tree_bytes": MetadataValue.int(result.tree_bytes),
            "bundle_size": MetadataValue.int(result.bundle_size),
            "clone_s": MetadataValue.float(result.clone_s),
            "upload_s": MetadataValue.float(result.upload_s),
            "duration_s": MetadataValue.float(result.duration_s),
            "sizes": sizes_line(result),
            "keep": ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in result.keep.items()),
            "lfs_objects": MetadataValue.int(result.lfs_objects),
            "lfs_bytes": MetadataValue.int(result.lfs_bytes),
            "lfs_uploaded": MetadataValue.int(result.lfs_uploaded),
            "lfs_missing": MetadataValue.int(result.lfs_missing),
            "lfs_missing_paths": MetadataValue.json(result.lfs_missing_paths),
            "wiki_outcome": result.wiki_outcome or "not kept",
            "wiki_snapshot_id": result.wiki_snapshot_id or "",
            "fresh": result.fresh or "",
            "bucket": MetadataValue.url(location)
            if location.startswith("http")
            else MetadataValue.path(location),
            "request_id": request.request_id,
        },
    )


@failure_hook(required_resource_keys={"vault", "lineage", "kafka"})
def record_failure(context: HookContext) -> None:
    """A failed step closes the request as `failed` with its reason, announces it on
    `completados` and frees the clone."""
    exc = context.op_exception
    reason = exc.description if isinstance(exc, Failure) and exc.description else str(exc)
    reason = mask_secrets(reason) or "the run failed"
    request = _request(context)
    run = context.instance.get_run_by_id(context.run_id)
    repo_id = (run.tags.get("dagster/partition") if run else None) or ""
    resources = context.resources
    run_requests(context, resources.lineage, resources.kafka).fail(
        request.request_id, repo_id, context.run_id, reason
    )
    if repo_id and forget_unexecuted_check(context.instance, context.run_id, repo_id):
        context.log.info(f"{repo_id} was never archived: restorable has nothing to report")
    work_dir = context.resources.vault.settings().work_dir
    remove_work_dir(work_dir / context.run_id)
    remove_work_dir(work_dir / f"{context.run_id}-wiki")


@graph_asset(
    partitions_def=repositories,
    group_name="repovault",
    hooks={record_failure},
    kinds={"git", "s3"},
    description="A git repository archived in its own bucket: bundle of all refs, HEAD files, "
    "manifest, latest.json. One partition per repo_id.",
)
def repo_archive() -> dict:
    return record_lineage(upload_snapshot(clone_repo()))
