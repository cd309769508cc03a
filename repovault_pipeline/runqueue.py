"""What Dagster's instance says about a request: why it still waits, which step its run is in.

The CLI reads the instance at DAGSTER_HOME (`make run`: REPOVAULT_HOME/dagster_home) when it
can open it; without one, the lineage row's own status and timestamps are all there is, and the
answer says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    EventLogEntry,
    RunsFilter,
)
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, DagsterRun

from .core.common.settings import Settings
from .core.intake.runs import TAG_HOST, TAG_REQUEST_ID
from .core.lineage.rows import Request
from .core.vault.upload import UploadProgress

PARTITION_TAG = "dagster/partition"
# A pending request's run before its first step, in a user's words.
RUN_STATES = {
    DagsterRunStatus.NOT_STARTED: "created, entering the queue",
    DagsterRunStatus.STARTING: "leaving the queue, its worker starting",
    DagsterRunStatus.STARTED: "started, before its first step",
}
# The archive graph's ops as a user would say what the run is doing.
STEP_PHASES = {
    "clone_repo": "cloning",
    "upload_snapshot": "uploading",
    "record_lineage": "recording",
}
UPLOAD_OP = "upload_snapshot"
# How far back in a run's log the CLI looks for the upload's progress line: the upload step
# logs little else, and one line every REPOVAULT_PROGRESS_EVERY_S at most.
PROGRESS_LOOKBACK = 50
# A step attempt starts (or an attempt ends for a retry): progress logged before is not its.
ATTEMPT_BOUNDS = (
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_RESTARTED,
    DagsterEventType.STEP_UP_FOR_RETRY,
)


@contextmanager
def dagster_instance(settings: Settings) -> Iterator[DagsterInstance | None]:
    """The instance at settings.dagster_home, or None when there is none to read (no
    dagster.yaml: nothing is created) or it cannot be opened (e.g. its database is down)."""
    home = settings.dagster_home
    if not (home / "dagster.yaml").is_file():
        yield None
        return
    try:
        instance = DagsterInstance.from_config(str(home))
    except Exception:  # any reason the instance cannot be read leaves the lineage's word
        yield None
        return
    with instance:
        yield instance


@dataclass(frozen=True)
class QueueLimit:
    """One rule of the instance's run queue (`tag_concurrency_limits`), as dagster.yaml says it."""

    key: str
    limit: int
    value: str | None = None  # None: runs with any value count together
    per_value: bool = False  # each value has the limit of its own (applyLimitPerUniqueValue)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> QueueLimit:
        value = raw.get("value")
        per_value = isinstance(value, Mapping) and bool(value.get("applyLimitPerUniqueValue"))
        return cls(
            str(raw["key"]),
            int(raw["limit"]),
            None if per_value or value is None else str(value),
            per_value,
        )

    def applies(self, tags: Mapping[str, str], to: Mapping[str, str]) -> bool:
        """Whether a run tagged `tags` counts against this rule for the run tagged `to`."""
        if self.key not in tags or self.key not in to:
            return False
        if self.per_value:
            return tags[self.key] == to[self.key]
        return self.value is None or tags[self.key] == self.value == to[self.key]


def queue_reasons(
    tags: Mapping[str, str],
    ahead: int,
    running: Sequence[Mapping[str, str]],
    max_runs: int | None,
    limits: Sequence[QueueLimit],
) -> str:
    """Why a queued run (tagged `tags`, `ahead` queued runs before it) has not started, given
    the tags of the runs in progress and the queue's limits."""
    held = []
    if max_runs is not None and len(running) >= max_runs:
        held.append(f"{len(running)} runs in progress, the instance's limit (max_concurrent_runs)")
    for rule in limits:
        busy = sum(rule.applies(other, tags) for other in running)
        if rule.key in tags and busy >= rule.limit:
            held.append(_describe_limit(rule, tags[rule.key], busy))
    line = f"queued behind {ahead} run{'s' * (ahead != 1)}" if ahead else "queued, next in line"
    if held:
        return f"{line}; held by: {'; '.join(held)}"
    return f"{line}; no limit reached: the Dagster daemon starts it on its next pass"


def _describe_limit(rule: QueueLimit, value: str, busy: int) -> str:
    if rule.key == TAG_HOST:
        return f"{busy} runs against {value} in progress, its host limit ({rule.limit})"
    if rule.key == PARTITION_TAG:
        return f"another run of {value} is in progress (one per repository)"
    return f"{busy} runs tagged {rule.key}={value} in progress, the limit ({rule.limit})"


def run_of(instance: DagsterInstance, request: Request) -> DagsterRun | None:
    """The request's run: the row's run id once the run started, else the run tagged with it."""
    if request.run_id:
        return instance.get_run_by_id(request.run_id)
    runs = instance.get_runs(RunsFilter(tags={TAG_REQUEST_ID: request.request_id}), limit=1)
    return runs[0] if runs else None


def why_queued(instance: DagsterInstance, run: DagsterRun) -> str:
    config = instance.get_concurrency_config().run_queue_config
    queued = instance.get_run_records(
        RunsFilter(statuses=[DagsterRunStatus.QUEUED]), order_by="create_timestamp", ascending=True
    )
    ahead = next((i for i, r in enumerate(queued) if r.dagster_run.run_id == run.run_id), 0)
    running = [r.tags for r in instance.get_runs(RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES))]
    return queue_reasons(
        run.tags,
        ahead,
        running,
        config.max_concurrent_runs if config else None,
        [QueueLimit.from_config(raw) for raw in (config.tag_concurrency_limits if config else [])],
    )


@dataclass(frozen=True)
class Phase:
    """Where an open request is: `step` in a few words (it changes when the request moves on),
    `age` how long it has been there."""

    step: str
    age: str = ""

    def line(self) -> str:
        return f"{self.step} ({self.age})" if self.age else self.step


def phase(instance: DagsterInstance | None, request: Request, at: datetime) -> Phase:
    """Queued (and why), or the step its run is in; what the lineage row says when the instance
    cannot answer (its database down, say)."""
    try:
        return _phase(instance, request, at)
    except Exception:  # the instance's failure is not the request's: fall back, never fail
        return _phase(None, request, at)


def _phase(instance: DagsterInstance | None, request: Request, at: datetime) -> Phase:
    if request.status == "pending":
        age = f"pending for {_age(request.creation_timestamp, at)}"
        if instance is None:
            return Phase("pending; no Dagster instance to ask why (DAGSTER_HOME)", age)
        run = run_of(instance, request)
        if run is None:
            return Phase("pending; no run yet (the injector takes it from the pending topic)", age)
        if run.status == DagsterRunStatus.QUEUED:
            return Phase(why_queued(instance, run), age)
        state = RUN_STATES.get(run.status, run.status.value.lower())
        return Phase(f"pending; run {run.run_id[:8]} {state}", age)
    age = f"started {_age(request.worker_start_timestamp, at)} ago"
    run = run_of(instance, request) if instance is not None else None
    if instance is None or run is None:
        return Phase(request.status, age)
    steps = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
    op = _op(steps[-1].step_key) if steps else ""
    step = STEP_PHASES.get(op, op or "starting")
    if op == UPLOAD_OP:
        recent = instance.get_records_for_run(run.run_id, limit=PROGRESS_LOOKBACK, ascending=False)
        done = upload_progress(r.event_log_entry for r in recent.records)
        step = f"{step} {done.counts()}" if done else step
    return Phase(f"{request.status}: {step}", age)


def _op(step_key: str | None) -> str:
    return (step_key or "").rpartition(".")[2]


def upload_progress(newest_first: Iterable[EventLogEntry]) -> UploadProgress | None:
    """The latest progress line the upload step's current attempt logged (SnapshotWriter's
    `progress`), from the run's log entries newest first; None before its first one."""
    for entry in newest_first:
        if _op(entry.step_key) != UPLOAD_OP:
            continue
        event = entry.dagster_event
        if event is not None and event.event_type in ATTEMPT_BOUNDS:
            return None
        if event is None and (done := UploadProgress.parse(entry.user_message)):
            return done
    return None


def _age(since: datetime | None, at: datetime) -> str:
    if since is None:
        return "-"
    seconds = max(0, int((at - since).total_seconds()))
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s" if m else f"{s}s"


def why_waiting(settings: Settings, requests: Sequence[Request], at: datetime) -> dict[str, str]:
    """For each pending request, why it still waits (by request id)."""
    pending = [r for r in requests if r.status == "pending"]
    with dagster_instance(settings) as instance:
        return {r.request_id: phase(instance, r, at).line() for r in pending}
