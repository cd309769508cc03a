"""`sources_sensor` and `refresh_sensor`: the fleet keeps itself fresh without a run per check.

The work of a tick is in `core.sources` and `core.refresh`; here it becomes run requests of
`archive_repo_job`, new partitions of `repositories` and `pending` rows in `repo_requests`, on a
daemon tick only: a test of a sensor plans the same way and says what it would do.
Every run carries the `repovault/host` tag, which the instance's run queue limits per host.
"""

from collections.abc import Sequence
from typing import NamedTuple

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from sqlalchemy.exc import SQLAlchemyError

from ..core.common.redact import mask_secrets
from ..core.intake.runs import request_tags
from ..core.lineage.requests import LineageStore, now
from ..core.sources.discover import TRACK_SOURCE, plan_sources, sources_tick
from ..core.sources.refresh import REFRESH_SOURCE, plan_refresh, record_refresh
from ..jobs import archive_repo_job
from ..partitions import REPOSITORIES, repositories
from ..resources import LineageResource, VaultResource
from .ticks import dry_run, on_daemon_tick

REFRESH_BATCH = 200  # ls-remote checks per tick: 288,000 a day at one tick a minute


@sensor(
    job=archive_repo_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Lists the tracked sources (repovault track) that are due (daily) through the "
    "GitHub/GitLab APIs; each new repository becomes a partition and a first archive run "
    "(source=track, run key track:<repo_id>), at most 200 a tick. A repository missing from a "
    "complete listing whose remote says not found is marked gone (snapshots kept). Testing it "
    "lists and checks, and says what a tick would record and request.",
)
def sources_sensor(
    context: SensorEvaluationContext, lineage: LineageResource, vault: VaultResource
) -> SensorResult | SkipReason:
    settings = vault.settings()
    at = now()
    if not on_daemon_tick(context):
        return dry_run(plan_sources(settings, lineage.fleet(), at, context.cursor or "").preview())
    tick = sources_tick(settings, lineage.fleet(), at, context.cursor or "")
    for listing in tick.listings:
        found = f"{len(listing.repos)} repositories ({listing.filtered} filtered out)"
        if listing.error:
            context.log.warning(f"{listing.source.spec}: {found} so far; {listing.error}")
        else:
            context.log.info(f"{listing.source.spec}: {found}")
        for name, reason in listing.refused:
            context.log.warning(f"{listing.source.spec}: {name} not archived: {reason}")
    for repo_id in tick.gone:
        context.log.warning(f"{repo_id} is gone upstream; its snapshots are kept")
    runs = [Run(r.repo_id, r.repo_url, r.request_id, r.run_key, r.tags) for r in tick.first_runs]
    _record(context, lineage.store(), runs, TRACK_SOURCE)
    return _result(
        context,
        runs,
        tick.cursor,
        f"{len(tick.listings)} sources listed, {len(tick.new_repos)} new repositories, "
        "no first run to request",
    )


@sensor(
    job=archive_repo_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Checks the archived repositories not checked for REPOVAULT_REFRESH_INTERVAL_H "
    "with git ls-remote of the code and, when kept, the wiki (REPOVAULT_HOST_CONCURRENCY per "
    "host, 200 a tick), and the forge's activity stamp from the latest listing when metadata is "
    "kept; requests a run (source=refresh, run key refresh:<repo_id>:<12 hex of what was seen>) "
    "only for those whose code refs, wiki refs or stamp differ from their latest snapshots'. "
    "Testing it checks, and says what a tick would record and request.",
)
def refresh_sensor(
    context: SensorEvaluationContext, lineage: LineageResource, vault: VaultResource
) -> SensorResult | SkipReason:
    settings = vault.settings()
    at = now()
    outcome = plan_refresh(settings, lineage.fleet(), at, limit=REFRESH_BATCH)
    if not on_daemon_tick(context):
        changed = ", ".join(f"{c.repo_id} ({c.reason})" for c in outcome.changed)
        return dry_run(
            f"{outcome.summary()}; would record the checks and request "
            f"{len(outcome.changed)} runs ({changed or 'none'})"
        )
    record_refresh(lineage.fleet(), at, outcome)
    for repo_id, reason in outcome.failed:
        context.log.warning(f"{repo_id}: {mask_secrets(reason)}")
    for repo_id in outcome.gone:
        context.log.warning(f"{repo_id} is gone upstream; its snapshots are kept")
    for change in outcome.changed:
        context.log.info(f"{change.repo_id} changed: {change.reason}")
    context.log.info(outcome.summary())
    keeps = lineage.fleet().keeps()
    runs = [
        Run(
            c.repo_id,
            c.repo_url,
            c.request_id,
            c.run_key,
            request_tags(
                c.request_id, c.repo_url, REFRESH_SOURCE, at, keeps.get(c.source_id or "")
            ),
        )
        for c in outcome.changed
    ]
    _record(context, lineage.store(), runs, REFRESH_SOURCE)
    return _result(context, runs, None, f"{outcome.summary()}; nothing to request")


class Run(NamedTuple):
    repo_id: str
    repo_url: str
    request_id: str
    run_key: str
    tags: dict[str, str]


def _record(
    context: SensorEvaluationContext, store: LineageStore, runs: Sequence[Run], source: str
) -> None:
    """One `pending` row per request (a replayed tick writes nothing new); a lineage outage
    does not cost the runs: each creates its row when it starts."""
    try:
        for run in runs:
            store.record_pending(run.repo_url, run.repo_id, source, request_id=run.request_id)
    except SQLAlchemyError as exc:
        context.log.error(f"could not record the requests in lineage ({type(exc).__name__})")


def _result(
    context: SensorEvaluationContext, runs: Sequence[Run], cursor: str | None, idle: str
) -> SensorResult:
    new = sorted(
        {
            run.repo_id
            for run in runs
            if not context.instance.has_dynamic_partition(REPOSITORIES, run.repo_id)
        }
    )
    return SensorResult(
        run_requests=[
            RunRequest(run_key=run.run_key, partition_key=run.repo_id, tags=run.tags)
            for run in runs
        ],
        dynamic_partitions_requests=[repositories.build_add_request(new)] if new else None,
        cursor=cursor,
        skip_reason=None if runs else idle,
    )
