"""For operators and their tools: `/healthz` (no token: a load balancer's probe), `/metrics`
(Prometheus) and `/api/stats`, both computed at each call from `core.stats`."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from ...core.common.errors import ArchiveError
from ...core.common.redact import mask_secrets
from ...core.lineage.requests import STATUSES
from ...core.lineage.stats import compute_stats
from ..deps import Reader, Vault, VaultDep
from ..errors import AUTH_ERRORS
from ..models import Health, Stats

router = APIRouter()


@router.get(
    "/api/stats", response_model_exclude_unset=True, responses=AUTH_ERRORS, dependencies=[Reader]
)
def stats(vault: VaultDep) -> Stats:
    """The `vault_stats` figures, computed now."""
    return Stats.model_validate(
        compute_stats(vault.settings, vault.store, vault.lineage()).to_dict()
    )


@router.get(
    "/healthz",
    response_model=Health,
    response_model_exclude_unset=True,
    response_class=JSONResponse,
    responses={503: {"model": Health, "description": "`down`, and which part did not answer"}},
)
def healthz(vault: VaultDep) -> JSONResponse:
    """200 when the lineage database and the object store answer, else 503 saying which."""
    problems = []
    try:
        with vault.lineage().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to answer is "down"; the reason is reported
        problems.append(f"lineage database: {type(exc).__name__}")
    try:
        vault.store.list_buckets(vault.settings.bucket_prefix)
    except ArchiveError as exc:
        problems.append(f"object store: {mask_secrets(str(exc))[:200]}")
    if problems:
        down = Health(status="down", problems=problems)
        return JSONResponse(down.model_dump(exclude_unset=True), status_code=503)
    return JSONResponse(Health(status="ok").model_dump(exclude_unset=True))


@router.get(
    "/metrics", response_class=PlainTextResponse, responses=AUTH_ERRORS, dependencies=[Reader]
)
def metrics(vault: VaultDep) -> PlainTextResponse:
    """Prometheus metrics, computed at each scrape from the same figures as /api/stats;
    a read token (Prometheus: `authorization: {credentials_file: ...}`)."""
    registry = CollectorRegistry()
    registry.register(StatsCollector(vault))
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class StatsCollector:
    """Gauges from `core.stats` at each scrape: requests by status and source, runs, bytes,
    failures by reason, and the oldest check of an archived repository."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = compute_stats(self.vault.settings, self.vault.store, self.vault.lineage())
        f = stats.figures
        by_status = GaugeMetricFamily(
            "repovault_requests", "Requests in repo_requests by status", labels=["status"]
        )
        for status in STATUSES:
            by_status.add_metric([status], f[f"requests_{status}"])
        yield by_status
        by_source = GaugeMetricFamily(
            "repovault_requests_by_source", "Requests by source", labels=["source"]
        )
        for name, value in f.items():
            if name.startswith("requests_source_"):
                by_source.add_metric([name.removeprefix("requests_source_")], value)
        yield by_source
        yield GaugeMetricFamily(
            "repovault_runs_finished_24h", "Runs finished in the last 24 h", f["run_time_count_24h"]
        )
        runtime = GaugeMetricFamily(
            "repovault_run_seconds", "Run time over 24 h by quantile", labels=["quantile"]
        )
        runtime.add_metric(["0.5"], f["run_time_p50_s"])
        runtime.add_metric(["0.95"], f["run_time_p95_s"])
        yield runtime
        yield GaugeMetricFamily(
            "repovault_archived_repositories",
            "Repositories with a snapshot",
            f["archived_repositories"],
        )
        stored = GaugeMetricFamily("repovault_stored_bytes", "Bytes in the vault", labels=["kind"])
        for kind in ("bundle", "tree", "lfs", "wiki", "metadata"):
            stored.add_metric([kind], f[f"{kind}_bytes"])
        yield stored
        failures = GaugeMetricFamily(
            "repovault_failures_24h",
            "Failed requests in the last 24 h by reason",
            labels=["reason"],
        )
        for reason, count in stats.failures.items():
            failures.add_metric([reason], count)
        yield failures
        yield GaugeMetricFamily(
            "repovault_oldest_check_age_hours",
            "Hours since the least recently checked archived repository was checked",
            f["oldest_check_age_h"],
        )
        yield GaugeMetricFamily(
            "repovault_past_refresh_interval",
            "Archived repositories not checked within REPOVAULT_REFRESH_INTERVAL_H",
            f["past_refresh_interval"],
        )
