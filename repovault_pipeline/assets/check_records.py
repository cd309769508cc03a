"""What the Dagster instance remembers of the `restorable` check, per partition: the thin place
where archive runs read (and, for a partition that never archived, clear) its record."""

from __future__ import annotations

from dagster import AssetCheckKey, AssetCheckSeverity, AssetKey, DagsterInstance
from dagster._core.event_api import AssetRecordsFilter, PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    AssetCheckExecutionRecordStatus,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

ARCHIVE = AssetKey("repo_archive")
RESTORABLE = AssetCheckKey(asset_key=ARCHIVE, name="restorable")


def failed_verdicts(instance: DagsterInstance, repo_id: str) -> dict[str, str]:
    """{snapshot id: reason} when the partition's latest completed `restorable` execution
    failed as an error (a store that could not be asked is a warning and proves nothing)."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        RESTORABLE,
        limit=1,
        status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES),
        partition_filter=PartitionKeyFilter(key=repo_id),
    )
    evaluation = history[0].evaluation if history else None
    if evaluation is None or evaluation.passed or evaluation.severity != AssetCheckSeverity.ERROR:
        return {}
    snapshot = evaluation.metadata.get("snapshot_id")
    reason = evaluation.metadata.get("reason")
    if snapshot is None or not snapshot.value:
        return {}
    why = reason.value if reason is not None else "failed"
    return {str(snapshot.value): f"the last restorable check of it failed ({why})"}


def forget_unexecuted_check(instance: DagsterInstance, run_id: str, repo_id: str) -> bool:
    """A run plans `restorable` when it starts; if the archive fails, the check never executes
    and Dagster shows the planned record as "execution failed" for the partition. For a
    partition that was never archived there is nothing to check: drop that record, so the
    partition carries no check result (a partition with a snapshot keeps Dagster's account).
    True when a record was dropped."""
    if instance.fetch_materializations(
        AssetRecordsFilter(asset_key=ARCHIVE, asset_partitions=[repo_id]), limit=1
    ).records:
        return False
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage) or not storage.supports_asset_checks:
        return False
    table = AssetCheckExecutionsTable
    with storage.index_connection() as conn:
        done = conn.execute(
            table.delete().where(
                table.c.asset_key == ARCHIVE.to_string(),
                table.c.check_name == RESTORABLE.name,
                table.c.partition == repo_id,
                table.c.run_id == run_id,
                table.c.execution_status == AssetCheckExecutionRecordStatus.PLANNED.value,
            )
        )
    return bool(done.rowcount)
