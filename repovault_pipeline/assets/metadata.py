"""`repo_metadata`: the forge metadata of each archived repository (core/metadata.py), read
after its `repo_archive` partition in the same run. A metadata snapshot records the forge's
activity stamp listed before it (`repo_state.metadata_stamp`), so refresh requests a run when
the listing shows a newer one."""

from collections.abc import Iterator

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ..core.identity import parse_repo_id
from ..core.metadata import MetadataArchiver, forge_of, wanted
from ..core.runs import request_of_run
from ..partitions import repositories
from ..resources import LineageResource, VaultResource
from .archive import TRANSIENT_RETRY, archive_errors, repo_archive


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
    context: AssetExecutionContext, vault: VaultResource, lineage: LineageResource
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
    with archive_errors(context):  # a rate limit, a refused token: reported, retried next run
        result = MetadataArchiver(settings, vault.store(), context.log).archive(ref, forge)
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
        }
    )
