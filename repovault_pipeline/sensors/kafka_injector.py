"""`kafka_injector_sensor`: the injector. `pendientes` -> run requests of `archive_repo_job`.

The cursor holds the next offset of every partition; the work of a tick is `core.injector`.
"""

import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from ..core.injector import inject
from ..core.runs import request_tags
from ..jobs import archive_repo_job
from ..partitions import repositories
from ..resources import KafkaResource, LineageResource


def load_cursor(cursor: str | None, topic: str) -> dict[int, int]:
    """Positions per partition; a cursor written for another topic does not apply."""
    if not cursor:
        return {}
    doc = json.loads(cursor)
    if doc.get("topic") != topic:
        return {}
    return {int(p): int(offset) for p, offset in doc.get("positions", {}).items()}


@sensor(
    job=archive_repo_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Reads `pendientes` by partition assignment from the offsets in its cursor and "
    "requests one archive run per valid message (run key = topic:partition:offset); invalid "
    "messages go to `rechazados`. Offsets are committed to the group repovault-injector.",
)
def kafka_injector_sensor(
    context: SensorEvaluationContext, kafka: KafkaResource, lineage: LineageResource
) -> SensorResult:
    settings = kafka.settings()
    topic = settings.topics.pending
    gateway = kafka.gateway()
    try:
        tick = inject(
            settings,
            gateway,
            lineage.store(),
            load_cursor(context.cursor, topic),
            first_tick=context.cursor is None,
        )
    finally:
        gateway.close()
    cursor = json.dumps(
        {"topic": topic, "positions": {str(p): o for p, o in tick.positions.items()}}
    )
    repo_ids = {a.request.ref.repo_id for a in tick.accepted}
    new_partitions = sorted(
        repo_ids - set(context.instance.get_dynamic_partitions(repositories.name))
    )
    run_requests = [
        RunRequest(
            run_key=accepted.run_key,
            partition_key=accepted.request.ref.repo_id,
            tags=request_tags(
                accepted.request.request_id,
                accepted.request.ref.url,
                accepted.request.source,
                accepted.created_at,
            ),
        )
        for accepted in tick.accepted
    ]
    context.log.info(
        f"read {tick.read} messages from {topic}: {len(run_requests)} run requests, "
        f"{tick.rejected} rejected, {len(new_partitions)} new repositories"
    )
    return SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[repositories.build_add_request(new_partitions)]
        if new_partitions
        else None,
        cursor=cursor,
        skip_reason=None
        if run_requests
        else f"no new valid requests on {topic} ({tick.read} read, {tick.rejected} rejected)",
    )
