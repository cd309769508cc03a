"""`repo_metadata`: the forge metadata of each archived repository (core/sources/metadata/), read
after its `repo_archive` partition in the same run. A metadata snapshot records the forge's
activity stamp listed before it (`repo_state.metadata_stamp`), so refresh requests a run when
the listing shows a newer one.

`record_lineage` has closed the request's row when this runs. When the metadata fails for good
(a permanent error, or the last retry of a transient one), the row turns `partial` with
`metadata_failed` and a second `completados` event says so: the last event of a request is the
truth (docs/contract.md). The step still fails, so Dagster shows the run failed."""

from collections.abc import Iterator

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from ..core.common.identity import parse_repo_id
from ..core.common.redact import mask_secrets
from ..core.intake.runs import RunRequestInfo, request_of_run
from ..core.lineage.requests import METADATA_FAILED
from ..core.sources.forges import forge_of
from ..core.sources.metadata.archive import MetadataArchiver, wanted
from ..partitions import repositories
from ..resources import KafkaResource, LineageResource, VaultResource
from .archive import TRANSIENT_RETRY, archive_errors, repo_archive, run_requests


@asset(
    partitions_def=repositories,
    group_name="repovault",
    deps=[repo_archive],
    kinds={"github", "gitlab", "s3"},
    output_required=False,
    retry_policy=TRANSIENT_RETRY,
    description="Issues, pull/merge requests, comments, reviews, labels, milestones, releases "
    "and release assets of the repository's forge, as JSON Lines under metadata/ in its bucket.",
)
def repo_metadata(
    context: AssetExecutionContext,
    vault: VaultResource,
    lineage: LineageResource,
    kafka: KafkaResource,
) -> Iterator[MaterializeResult]:
    settings = vault.settings()
    ref = parse_repo_id(context.partition_key)
    forge = forge_of(ref, settings)
    run = context.instance.get_run_by_id(context.run_id)
    request = request_of_run(run.tags if run else {}, context.run_id)
    with archive_errors(context):
        requested = request.keep_for(settings).metadata
    skipped = wanted(settings, forge, requested)
    if skipped is not None or forge is None:
        context.log.info(f"metadata of {ref.repo_id} not kept: {skipped}")
        return
    fleet = lineage.fleet()
    listed = next((s.forge_stamp for s in fleet.get([ref.repo_id])), None)  # before the read
    try:
        with archive_errors(context):  # a rate limit, a refused token: reported, retried
            result = MetadataArchiver(settings, vault.store(), context.log).archive(ref, forge)
    except Exception as exc:
        if isinstance(exc, Failure) or context.retry_number >= TRANSIENT_RETRY.max_retries:
            reason = exc.description if isinstance(exc, Failure) else str(exc)
            _record_failed(context, lineage, kafka, request, mask_secrets(reason or repr(exc)))
        raise
    if listed is not None:
        fleet.record_metadata(ref.repo_id, listed)
    yield MaterializeResult(
        metadata={
            "outcome": result.outcome,
            "snapshot_id": result.snapshot_id or "",
            "full_pass": result.full,
            "records": MetadataValue.int(result.records),
            "changed": MetadataValue.int(sum(result.changed.values())),
            "changed_by_kind": MetadataValue.json(result.changed),
            "deleted": MetadataValue.int(result.deleted),
            "assets_uploaded": MetadataValue.int(result.assets_uploaded),
            "api_requests": MetadataValue.int(result.requests),
            **({"absent": ", ".join(result.absent)} if result.absent else {}),
        }
    )


def _record_failed(
    context: AssetExecutionContext,
    lineage: LineageResource,
    kafka: KafkaResource,
    request: RunRequestInfo,
    reason: str,
) -> None:
    """The request's row becomes `partial` (`metadata_failed`), announced on `completados`."""
    run_requests(context, lineage, kafka).part_failed(
        request.request_id, context.partition_key, context.run_id, METADATA_FAILED, reason
    )
