"""`vault_stats`: the whole vault's figures (`core.stats`), materialized every hour by
`vault_stats_schedule`; every figure is numeric metadata, so the UI plots its history."""

from collections.abc import Iterable
from typing import Any

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ..core.lineage.stats import compute_stats, human_size
from ..resources import LineageResource, VaultResource


@asset(
    name="vault_stats",
    group_name="repovault",
    kinds={"postgres", "s3"},
    description="Requests by status and source, archived repositories, bundle, tree, LFS, wiki "
    "and metadata bytes, queue/start/run latencies (p50, p95 over 24 h), failed and partial "
    "requests by reason, repositories past REPOVAULT_REFRESH_INTERVAL_H, the largest "
    "repositories.",
)
def vault_stats(
    context: AssetExecutionContext, vault: VaultResource, lineage: LineageResource
) -> MaterializeResult:
    stats = compute_stats(vault.settings(), vault.store(), lineage.store())
    # Durations and ages (`_s`, `_h`) are floats, the rest counts: one type per name, always.
    metadata: dict[str, Any] = {
        name: MetadataValue.float(float(value))
        if name.endswith(("_s", "_h"))
        else MetadataValue.int(int(value))
        for name, value in stats.figures.items()
    }
    metadata["failures_by_reason"] = MetadataValue.md(
        _table(("reason", "failures (24 h)"), stats.failures.items())
    )
    metadata["largest_repositories"] = MetadataValue.md(
        _table(
            ("repo_id", "bundle"),
            ((r["repo_id"], human_size(r["bundle_bytes"])) for r in stats.largest),
        )
    )
    metadata["past_refresh_interval_list"] = MetadataValue.md(
        _table(
            ("repo_id", "hours since checked"),
            ((s["repo_id"], s["age_h"]) for s in stats.stale[:20]),
        )
    )
    context.log.info(
        f"{stats.figures['archived_repositories']:.0f} repositories, "
        f"{stats.figures['requests_total']:.0f} requests, "
        f"{stats.figures['failures_24h']:.0f} failures in 24 h"
    )
    return MaterializeResult(metadata=metadata)


def _table(header: tuple[str, str], rows: Iterable[tuple[object, object]]) -> str:
    """A two-column Markdown table for the UI's metadata panel."""
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += [f"| {str(a).replace('|', '/')} | {b} |" for a, b in rows]
    return "\n".join(lines) if len(lines) > 2 else "none"
