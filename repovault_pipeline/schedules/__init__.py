"""Schedules: the daily GitHub trending top 10 and the restore drill."""

from .restore_drill import restore_drill_schedule
from .trending import trending_top10_schedule

__all__ = ["restore_drill_schedule", "trending_top10_schedule"]
