"""What the Dagster UI sends: its own GraphQL mutations, executed in process by the webserver's
schema (dagster_graphql) against a workspace, as a click in the browser would."""

from __future__ import annotations

from collections.abc import Sequence

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
