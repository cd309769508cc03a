"""Schedules: the daily GitHub trending top 10, the restore drill, the hourly vault_stats, the
daily summary notification."""

from .notify import notify_daily_schedule
from .restore_drill import restore_drill_schedule
from .stats import vault_stats_job, vault_stats_schedule
from .trending import trending_intake_job, trending_top10_schedule

__all__ = [
    "notify_daily_schedule",
    "restore_drill_schedule",
    "trending_intake_job",
    "trending_top10_schedule",
    "vault_stats_job",
    "vault_stats_schedule",
]
