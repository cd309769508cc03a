"""The viewers' Dagster UI as the compose stack starts it (`dagster-viewer`): the webserver
with the command of docker-compose.yml, over HTTP, refuses what a viewer's browser (or a
hand-made request) would send to change something, and still answers what the pages read.
Only the workspace file differs: the code location is loaded from the module, not from the
code server over gRPC."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from repovault_pipeline.partitions import repositories
from tests.support.compose import load_project, read_env_file
from tests.support.servers import serving
from tests.support.ui import LAUNCH_RUN

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = {"repositoryLocationName": "repovault", "repositoryName": "__repository__"}
ADD_PARTITION = """
mutation AddDynamicPartition(
  $partitionsDefName: String!, $partitionKey: String!, $repositorySelector: RepositorySelector!
) {
  addDynamicPartition(
    partitionsDefName: $partitionsDefName,
    partitionKey: $partitionKey,
    repositorySelector: $repositorySelector
  ) {
    __typename
    ... on UnauthorizedError { message }
  }
}
"""
LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename } } } } }
"""


def viewer_command(workspace: Path, port: int) -> list[str]:
    """dagster-viewer's command from docker-compose.yml, on loopback, `port` and `workspace`."""
    env = read_env_file(ROOT / ".env.example")
    project = load_project([ROOT / "docker-compose.yml"], env, ROOT)
    command = list(project["services"]["dagster-viewer"]["command"])
    assert command[0] == "dagster-webserver" and "--read-only" in command
    given = {"-h": "127.0.0.1", "-p": str(port), "-w": str(workspace)}
    for flag, value in given.items():
        command[command.index(flag) + 1] = value
    return [str(Path(sys.executable).with_name(command[0])), *command[1:]]


def graphql(ui: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = requests.post(
        f"{ui}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
def viewer_ui(tmp_path: Path) -> Iterator[str]:
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: repovault_pipeline.definitions\n"
        "      location_name: repovault\n"
    )
    home = tmp_path / "dagster"
    home.mkdir()
    env = {"DAGSTER_HOME": str(home), "REPOVAULT_HOME": str(tmp_path / "repovault")}
    with serving(lambda port: viewer_command(workspace, port), tmp_path / "ui.log", env) as port:
        ui = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = graphql(ui, LOCATIONS)["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["loadStatus"] == "LOADED":
                assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the code location did not load: {(tmp_path / 'ui.log').read_text()}")
        yield ui


def test_the_viewers_ui_refuses_every_change(viewer_ui: str) -> None:
    # What the pages read: the repositories' partitions, the permissions the buttons follow.
    permissions = graphql(viewer_ui, "{ permissions { permission value } }")["permissions"]
    allowed = {p["permission"] for p in permissions if p["value"]}
    assert {"launch_pipeline_execution", "terminate_pipeline_execution"}.isdisjoint(allowed)
    assert {"edit_sensor", "start_schedule", "wipe_assets", "edit_dynamic_partitions"}.isdisjoint(
        allowed
    )

    # "Materialize" / "Launch run" of a repository's partition: refused.
    params = {
        "selector": {**REPOSITORY, "pipelineName": "archive_repo_job"},
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "github.com/o/r"}]},
    }
    launched = graphql(viewer_ui, LAUNCH_RUN, {"executionParams": params})
    assert launched["launchPipelineExecution"]["__typename"] == "UnauthorizedError"

    # Adding a repository as a partition from the UI: refused, and nothing was added.
    added = graphql(
        viewer_ui,
        ADD_PARTITION,
        {
            "partitionsDefName": repositories.name,
            "partitionKey": "github.com/o/r",
            "repositorySelector": REPOSITORY,
        },
    )
    assert added["addDynamicPartition"]["__typename"] == "UnauthorizedError"
