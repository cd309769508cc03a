"""Schedules: the daily GitHub trending top 10."""

from .trending import trending_top10_schedule

__all__ = ["trending_top10_schedule"]
