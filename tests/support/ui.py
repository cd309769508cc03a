"""What the Dagster UI sends: its own GraphQL mutations, executed in process by the webserver's
schema (dagster_graphql) against a workspace, as a click in the browser would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster._core.workspace.context import WorkspaceProcessContext
from dagster_graphql.test.utils import execute_dagster_graphql

# The mutation of the asset page's "Materialize" dialog (ui-core LaunchAssetChoosePartitionsDialog)
# when more than one partition is chosen.
LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}
"""
# The tag the UI adds to everything it launches (ui-core uiExecutionTags.tsx).
FROM_UI = {"key": "dagster/from_ui", "value": "true"}


def launch_asset_backfill(
    context: WorkspaceProcessContext, asset: str, partitions: Sequence[str]
) -> str:
    """Backfill `partitions` of `asset` from its asset page; returns the backfill id."""
    params = {
        "tags": [FROM_UI],
        "assetSelection": [{"path": [asset]}],
        "partitionNames": list(partitions),
        "fromFailure": False,
    }
    result = execute_dagster_graphql(
        context.create_request_context(),
        LAUNCH_PARTITION_BACKFILL,
        {"backfillParams": params},
    )
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


# The mutation of the asset page's "Materialize" button for one partition, and of the
# launchpad's "Launch run" (ui-core LaunchPipelineExecution).
LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def launch_run(
    context: WorkspaceProcessContext,
    job: str,
    partition: str,
    assets: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    checks: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Launch one partition of `job` as the UI does: from an asset page (`assets` selected with
    their `checks`, job `__ASSET_JOB`; no asset and a check: "Execute check") or from the job's
    launchpad with extra `tags`; returns the run id."""
    checks = checks or {}
    selector: dict = {
        "repositoryLocationName": "repovault",
        "repositoryName": "__repository__",
        "pipelineName": job,
    }
    if assets is not None:
        selector["assetSelection"] = [{"path": [asset]} for asset in assets]
        # The UI runs the selected assets' checks with them (ui-core getAssetCheckHandleInputs).
        selector["assetCheckSelection"] = [
            {"assetKey": {"path": [asset]}, "name": check}
            for asset, names in checks.items()
            for check in names
        ]
    run_tags = {"dagster/partition": partition, **(tags or {})}
    params = {
        "selector": selector,
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {
            "tags": [FROM_UI, *({"key": k, "value": v} for k, v in run_tags.items())]
        },
    }
    result = execute_dagster_graphql(
        context.create_request_context(), LAUNCH_RUN, {"executionParams": params}
    )
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


# The mutation of a schedule's "Test schedule" dialog (ui-core EvaluateScheduleDialog).
SCHEDULE_DRY_RUN = """
mutation ScheduleDryRunMutation($selectorData: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selectorData, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        runRequests { runKey jobName runConfigYaml tags { key value } }
        skipReason
        error { message stack }
      }
    }
    ... on PythonError { message stack }
  }
}
"""


def dry_run_schedule(context: WorkspaceProcessContext, schedule: str, timestamp: float) -> dict:
    """ "Test schedule" for the tick at `timestamp`: the evaluation result the dialog shows."""
    selector = {
        "repositoryLocationName": "repovault",
        "repositoryName": "__repository__",
        "scheduleName": schedule,
    }
    result = execute_dagster_graphql(
        context.create_request_context(),
        SCHEDULE_DRY_RUN,
        {"selectorData": selector, "timestamp": timestamp},
    )
    tick = result.data["scheduleDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    evaluation = tick["evaluationResult"]
    assert evaluation["error"] is None, evaluation["error"]
    return evaluation


# The mutation of a sensor's "Test sensor" dialog (ui-core SensorDryRunDialog); the dialog fills
# the cursor field with the sensor's current cursor.
SENSOR_DRY_RUN = """
mutation SensorDryRunMutation($selectorData: SensorSelector!, $cursor: String) {
  sensorDryRun(selectorData: $selectorData, cursor: $cursor) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        cursor
        runRequests { runKey tags { key value } }
        dynamicPartitionsRequests { partitionKeys partitionsDefName type }
        skipReason
        error { message stack }
      }
    }
    ... on SensorNotFoundError { message }
    ... on PythonError { message stack }
  }
}
"""


def dry_run_sensor(context: WorkspaceProcessContext, sensor: str, cursor: str | None) -> dict:
    """ "Test sensor" from the sensor's page with `cursor`: the evaluation result the dialog
    shows."""
    selector = {
        "repositoryLocationName": "repovault",
        "repositoryName": "__repository__",
        "sensorName": sensor,
    }
    result = execute_dagster_graphql(
        context.create_request_context(),
        SENSOR_DRY_RUN,
        {"selectorData": selector, "cursor": cursor},
    )
    assert result.errors is None, result.errors
    tick = result.data["sensorDryRun"]
    assert tick["__typename"] == "DryRunInstigationTick", tick
    evaluation = tick["evaluationResult"]
    assert evaluation["error"] is None, evaluation["error"]
    return evaluation
