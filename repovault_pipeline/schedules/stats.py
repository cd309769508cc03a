"""`vault_stats_schedule`: `vault_stats` materialized every hour."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from ..assets import vault_stats

vault_stats_job = define_asset_job(
    name="vault_stats_job",
    selection=AssetSelection.assets(vault_stats),
    description="Materialize vault_stats: the whole vault's figures.",
)

vault_stats_schedule = ScheduleDefinition(
    name="vault_stats_schedule",
    job=vault_stats_job,
    cron_schedule="7 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour at :07 UTC: materialize vault_stats.",
)
