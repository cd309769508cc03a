"""`repo_archive`: one partition per repository, computed by clone_repo -> upload_snapshot ->
record_lineage. The work is in `core.snapshot`; these ops add the run's request, its lineage,
retries for transient failures and the materialization metadata."""

from collections.abc import Iterator
from contextlib import contextmanager

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
from ..core.intake.messages import status_event
from ..core.intake.reconcile import outcome_metadata
from ..core.intake.runs import (
    RunRequestInfo,
    default_clone_url,
    default_url_hint,
    missing_run_tags,
    request_of_run,
    resolve_clone_ref,
)
from ..core.lineage.requests import now, reasons_line
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


@contextmanager
def archive_errors(
    context: OpExecutionContext | AssetExecutionContext,
    lineage: LineageResource | None = None,
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
        if lineage is not None and request_id and attempt <= TRANSIENT_RETRY.max_retries:
            _note_retry(context, lineage, request_id, attempt, reason)
        if hint:
            raise TransientError(reason) from exc
        raise
    except (InvalidRepoUrl, ArchiveError) as exc:
        reason = f"{exc}; {hint}" if hint else str(exc)
        raise Failure(description=mask_secrets(reason), allow_retries=False) from None


def _note_retry(
    context: OpExecutionContext | AssetExecutionContext,
    lineage: LineageResource,
    request_id: str,
    attempt: int,
    reason: str,
) -> None:
    """Best effort: a lineage outage must not turn a retry into a failure."""
    try:
        lineage.store().record_retrying(
            request_id, attempt, TRANSIENT_RETRY.max_retries + 1, reason
        )
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
    store = lineage.store()
    run_record = context.instance.get_run_record_by_id(context.run_id)
    created_at = request.requested_at or (run_record.create_timestamp if run_record else None)
    url = request.repo_url or store.last_url(repo_id)
    store.record_started(
        request.request_id,
        url or default_clone_url(repo_id),
        repo_id,
        request.source,
        context.run_id,
        created_at=created_at,
        keep_error=context.retry_number > 0,
    )
    if context.retry_number == 0:
        event = status_event(request.request_id, repo_id, context.run_id, "in_progress")
        kafka.publish_status(settings.topics.in_progress, repo_id, event, context.log)
    hint = None if url else default_url_hint(repo_id)
    with archive_errors(context, lineage, request.request_id, hint):
        ref = resolve_clone_ref(repo_id, url, settings)
        context.log.info(f"archiving {ref.repo_id} from {mask_secrets(ref.url)}")
        keep = request.keep_for(settings)
        context.log.info(f"keeping: LFS objects {keep.lfs}, wiki {keep.wiki}")
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
    context: OpExecutionContext, vault: VaultResource, lineage: LineageResource, prepared: Prepared
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
    with archive_errors(context, lineage, _request(context).request_id):
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
    finished_at = now()
    if result.reasons:
        context.log.warning(f"{result.repo_id} is partial: {reasons_line(result.reasons)}")
    lineage.store().record_finished(
        request.request_id,
        result.status,
        snapshot_id=result.snapshot_id,
        head_commit=result.head_commit,
        bytes_uploaded=result.bytes_uploaded,
        reasons=result.reasons,
        finished_at=finished_at,
    )
    if result.refs_digest:  # what refresh_sensor compares the remote's refs (and wiki's) with
        lineage.fleet().record_snapshot(
            result.repo_id,
            result.repo_url,
            result.refs_digest,
            result.snapshot_id,
            finished_at,
            wiki_digest=result.wiki_refs_digest,
        )
    event = status_event(
        request.request_id,
        result.repo_id,
        context.run_id,
        result.status,
        snapshot_id=result.snapshot_id,
        head_commit=result.head_commit,
        reasons=result.reasons,
        at=finished_at,
    )
    kafka.publish_status(kafka.settings().topics.completed, result.repo_id, event, context.log)
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
    finished_at = now()
    context.resources.lineage.store().record_finished(
        request.request_id, "failed", error=reason, finished_at=finished_at
    )
    kafka: KafkaResource = context.resources.kafka
    event = status_event(
        request.request_id, repo_id, context.run_id, "failed", error=reason, at=finished_at
    )
    kafka.publish_status(kafka.settings().topics.completed, repo_id, event, context.log)
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
