"""Jobs: `archive_repo_job` materializes `repo_archive` partitions and runs their `restorable`
check (a run of the check alone, as the restore drill launches, archives nothing); `notify_job`
sends one notification."""

from typing import Any

from dagster import (
    MAX_RUNTIME_SECONDS_TAG,
    AssetSelection,
    Config,
    Failure,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    job,
    op,
)

from .assets import repo_archive, repo_metadata
from .core.common.settings import Settings
from .core.notify.events import Notification
from .core.notify.send import send
from .partitions import repositories
from .resources import NotifyResource

# In-process: the three ops share the clone on local disk, and a run archives one repository.
# Transient failures are retried by the ops' own retry policy (see assets/archive.py).
# Every run, however launched (sensor, schedule, UI, backfill), carries a maximum runtime
# (`dagster/max_runtime`, REPOVAULT_RUN_TIMEOUT_S): run monitoring fails a run whose worker died
# unseen, which would otherwise hold its repository's place in the queue forever. Job tags are
# fixed when the code location loads, so the setting is read here, from the code server's
# environment.
archive_repo_job = define_asset_job(
    name="archive_repo_job",
    selection=AssetSelection.assets(repo_archive, repo_metadata),
    partitions_def=repositories,
    executor_def=in_process_executor,
    tags={MAX_RUNTIME_SECONDS_TAG: str(Settings.from_env().run_timeout_s)},
    description="Archive one repository (partition = repo_id) into its bucket, then its forge "
    "metadata when it is kept.",
)


class NotificationConfig(Config):
    """A notification to send (`core.notify.events.Notification`), as the run's config."""

    event: str
    key: str
    title: str
    body: str
    repo_id: str | None = None

    @classmethod
    def of(cls, notification: Notification) -> dict[str, Any]:
        """The run config of the `notify_job` run that sends `notification`."""
        return {"ops": {"send_notification": {"config": notification.model_dump()}}}


@op(description="Sends the notification of its config to every REPOVAULT_NOTIFY_URLS entry.")
def send_notification(
    context: OpExecutionContext, config: NotificationConfig, notify: NotifyResource
) -> None:
    """Each URL on its own; the run fails only when no URL took the message (a URL that did
    not is a warning). Either way no archive run is touched: this is a run of its own."""
    notification = Notification.model_validate(config.model_dump())
    delivery = send(notify.settings().notify_urls, notification)
    for failure in delivery.failed:
        context.log.warning(f"notification {notification.key} not sent to {failure}")
    if delivery.sent:
        context.log.info(f"notification {notification.key} sent to {', '.join(delivery.sent)}")
    elif delivery.failed:
        raise Failure(
            f"notification {notification.key} reached no REPOVAULT_NOTIFY_URLS entry: "
            + "; ".join(delivery.failed),
            allow_retries=False,
        )


# Runs of it are requested by the notify sensors and the daily summary schedule, one run per
# notification with its key as run key: Dagster never launches two runs of one run key, so a
# failure is told once, and a test of a sensor or schedule (which launches nothing) sends nothing.
@job(
    executor_def=in_process_executor,
    description="Send one notification (REPOVAULT_NOTIFY_URLS, docs/contract.md Notifications).",
)
def notify_job() -> None:
    send_notification()
