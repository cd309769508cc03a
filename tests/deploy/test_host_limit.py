"""Both instances limit runs per git host like REPOVAULT_HOST_CONCURRENCY limits checks."""

from __future__ import annotations

import pytest
import yaml

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.intake.runs import TAG_HOST
from tests.support.servers import REPO_ROOT


@pytest.mark.parametrize("instance", ["dagster.yaml", "deploy/dagster-dev.yaml"])
def test_run_queue_limits_runs_per_host(instance: str) -> None:
    config = yaml.safe_load((REPO_ROOT / instance).read_text())["run_coordinator"]["config"]
    [limit] = [rule for rule in config["tag_concurrency_limits"] if rule["key"] == TAG_HOST]
    assert limit["value"] == {"applyLimitPerUniqueValue": True}
    assert limit["limit"] == Settings.from_env({}).host_concurrency
