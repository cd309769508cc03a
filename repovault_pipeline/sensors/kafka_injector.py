"""`kafka_injector_sensor`: the injector. `pendientes` -> run requests of `archive_repo_job`.

The cursor (`core.injector.InjectorCursor`) holds the next offset of every partition and the
topic's id; the work of a tick is `core.injector`.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ..core.intake.injector import InjectorCursor, inject, plan_tick
from ..core.intake.kafka import TopicMissing
from ..core.intake.runs import request_tags
from ..jobs import archive_repo_job
from ..partitions import REPOSITORIES, repositories
from ..resources import KafkaResource, LineageResource
from .ticks import dry_run, on_daemon_tick


@sensor(
    job=archive_repo_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Reads `pendientes` by partition assignment from the offsets in its cursor and "
    "requests one archive run per valid request (run key = request:<request_id>); invalid "
    "messages go to `rechazados`, and so does a warning when a stored offset is outside the "
    "log (broker restarted empty, topic recreated, retention). Offsets are committed to the "
    "group repovault-injector. Testing it only reads and says what a tick would do.",
)
def kafka_injector_sensor(
    context: SensorEvaluationContext, kafka: KafkaResource, lineage: LineageResource
) -> SensorResult | SkipReason:
    settings = kafka.settings()
    topic = settings.topics.pending
    cursor = InjectorCursor.load(context.cursor, topic)
    if not on_daemon_tick(context):
        try:
            return dry_run(plan_tick(settings, kafka.gateway(), cursor).preview(cursor))
        except TopicMissing:
            return dry_run(f"create the missing topics, then read {topic}")
    tick = inject(
        settings, kafka.gateway(), lineage.store(), cursor, first_tick=context.cursor is None
    )
    for reset in tick.resets:
        context.log.warning(reset.reason)
    repo_ids = {a.request.ref.repo_id for a in tick.accepted}
    new_partitions = sorted(repo_ids - set(context.instance.get_dynamic_partitions(REPOSITORIES)))
    run_requests = [
        RunRequest(
            run_key=accepted.run_key,
            partition_key=accepted.request.ref.repo_id,
            tags=request_tags(
                accepted.request.request_id,
                accepted.request.ref.url,
                accepted.request.source,
                accepted.created_at,
                accepted.request.keep,
                accepted.request.force,
            ),
        )
        for accepted in tick.accepted
    ]
    context.log.info(
        f"read {tick.read} messages from {topic}: {len(run_requests)} run requests, "
        f"{tick.rejected} rejected, {len(new_partitions)} new repositories"
        + (f", {len(tick.resets)} positions reset" if tick.resets else "")
    )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[repositories.build_add_request(new_partitions)]
        if new_partitions
        else None,
        cursor=tick.cursor.dump(topic),
        skip_reason=None
        if run_requests
        else f"no new valid requests on {topic} ({tick.read} read, {tick.rejected} rejected)",
    )
