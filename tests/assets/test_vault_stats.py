"""`vault_stats` through Dagster: one materialization whose figures are numeric metadata."""

from __future__ import annotations

from dagster import FloatMetadataValue, IntMetadataValue, instance_for_test

from repovault_pipeline.definitions import defs


def test_vault_stats_materializes_numeric_figures(private_lineage: str, archived) -> None:
    _, result = archived
    with instance_for_test() as instance:
        run = defs.resolve_job_def("vault_stats_job").execute_in_process(instance=instance)
    assert run.success
    [materialization] = run.asset_materializations_for_node("vault_stats")
    meta = materialization.metadata
    assert meta["archived_repositories"] == IntMetadataValue(1)
    assert meta["bundle_bytes"] == IntMetadataValue(result.bundle_size)
    assert meta["requests_total"] == IntMetadataValue(0)
    assert isinstance(meta["run_time_p95_s"], FloatMetadataValue)
    assert result.repo_id in meta["largest_repositories"].value
    schedule = defs.get_schedule_def("vault_stats_schedule")
    assert schedule.cron_schedule == "7 * * * *"
