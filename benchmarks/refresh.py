"""Refresh benchmark: `git ls-remote` checks of N unchanged repositories (what `refresh_sensor`
does) against the same check done as one `archive_repo_job` run per repository (outcome
`unchanged`), measured on a sample of runs and extrapolated to N.

    python -m benchmarks.refresh [--repos 1000] [--sample 5] [--out benchmarks/REFRESH.md]

Servers on 127.0.0.1 as in `benchmarks.run`: the test git server (smart HTTP), moto's S3
server, the embedded broker; lineage and `repo_state` in SQLite under the work folder. The N
served repositories are copies of one small bare repository (distinct paths, same refs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.run import local_broker, log
from tests.support.servers import REPO_ROOT, git_http_server, s3_server


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_fleet(served: Path, count: int) -> list[str]:
    """`count` bare repositories under served/fleet/, copies of one with a few commits."""
    seed = served.parent / "seed"
    seed.mkdir(parents=True)
    _git(seed, "init", "-q", "-b", "main")
    for i in range(3):
        (seed / f"f{i}.txt").write_text(f"{i}\n")
        _git(seed, "add", ".")
        _git(seed, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", f"c{i}")
    _git(seed, "tag", "v1")
    bare = served / "fleet" / "r0000.git"
    bare.parent.mkdir(parents=True)
    _git(served, "clone", "-q", "--bare", str(seed), str(bare))
    for i in range(1, count):
        shutil.copytree(bare, served / "fleet" / f"r{i:04d}.git")
    return [f"fleet/r{i:04d}" for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=5)
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "benchmarks" / "work" / "refresh")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "REFRESH.md")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    served = args.work / "served"
    served.mkdir(parents=True)
    log(f"creating {args.repos} served repositories")
    paths = make_fleet(served, args.repos)
    logs = args.work / "logs"
    logs.mkdir()
    with (
        git_http_server(served, logs / "git.log") as git_url,
        s3_server(logs / "moto.log") as s3_endpoint,
        local_broker(logs / "broker.log") as bootstrap,
    ):
        os.environ.update(
            {
                "REPOVAULT_S3_ENDPOINT": s3_endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "REPOVAULT_KAFKA_BOOTSTRAP": bootstrap,
                "REPOVAULT_DB_URL": f"sqlite:///{args.work / 'lineage.db'}",
                "REPOVAULT_ALLOWED_HOSTS": "127.0.0.1",
                "REPOVAULT_ALLOWED_SCHEMES": "http",
                "REPOVAULT_WORK_DIR": str(args.work / "clones"),
                "DAGSTER_HOME": str(args.work / "dagster"),
            }
        )
        os.environ.pop("GITHUB_TOKEN", None)
        (args.work / "dagster").mkdir()
        results = measure(git_url, paths, args.sample)
    results.update(repos=args.repos, sample=args.sample, cpus=os.cpu_count())
    write(args.out, results)
    log(f"wrote {args.out}")
    return 0


def measure(git_url: str, paths: list[str], sample: int) -> dict:
    from dagster import instance_for_test

    from repovault_pipeline.core.common.identity import parse_repo_url
    from repovault_pipeline.core.common.settings import Settings
    from repovault_pipeline.core.intake.runs import request_tags
    from repovault_pipeline.core.lineage.requests import now, open_lineage
    from repovault_pipeline.core.sources.fleet import FleetStore
    from repovault_pipeline.core.sources.refresh import refresh
    from repovault_pipeline.core.vault.gitops import GitClient, refs_digest
    from repovault_pipeline.definitions import defs
    from repovault_pipeline.partitions import repositories

    settings = Settings.from_env()
    lineage = open_lineage(settings.db_url)
    fleet = FleetStore(lineage.engine)
    urls = [f"{git_url}/{p}.git" for p in paths]
    first = parse_repo_url(urls[0], settings.allowed_schemes, settings.allowed_hosts)
    digest = refs_digest(GitClient(settings).ls_remote(first).refs)
    long_ago = datetime.now(UTC) - timedelta(days=2)
    for url in urls:
        ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
        # As an archive run records it: the served copies have no wiki.
        fleet.record_snapshot(
            ref.repo_id, ref.url, digest, "bench", long_ago, wiki_digest=refs_digest({})
        )

    log(f"refresh of {len(urls)} unchanged repositories")
    started = time.perf_counter()
    outcome = refresh(settings, fleet, datetime.now(UTC), limit=len(urls))
    refresh_s = time.perf_counter() - started
    assert len(outcome.unchanged) == len(urls), outcome.summary()

    job = defs.resolve_job_def("archive_repo_job")
    run_s = []
    with instance_for_test() as instance:
        for url in urls[:sample]:
            ref = parse_repo_url(url, settings.allowed_schemes, settings.allowed_hosts)
            instance.add_dynamic_partitions(repositories.name, [ref.repo_id])
            for attempt in ("first", "unchanged"):
                request_id = lineage.record_pending(ref.url, ref.repo_id, "cli", created_at=now())
                t0 = time.perf_counter()
                run = job.execute_in_process(
                    partition_key=ref.repo_id,
                    instance=instance,
                    tags=request_tags(request_id, ref.url, "cli", now()),
                )
                elapsed = time.perf_counter() - t0
                assert run.success
                if attempt == "unchanged":
                    [m] = run.asset_materializations_for_node("repo_archive")
                    assert m.metadata["outcome"].value == "unchanged"
                    run_s.append(elapsed)
            log(f"archive run (unchanged) of {ref.repo_id}: {run_s[-1]:.2f} s")
    per_run = sum(run_s) / len(run_s)
    return {
        "refresh_s": round(refresh_s, 2),
        "per_check_ms": round(1000 * refresh_s / len(urls), 1),
        "run_s": [round(s, 2) for s in run_s],
        "per_run_s": round(per_run, 2),
        "runs_extrapolated_s": round(per_run * len(urls), 1),
        "ratio": round(per_run * len(urls) / refresh_s, 1),
        "host_concurrency": settings.host_concurrency,
    }


def write(out: Path, r: dict) -> None:
    n = r["repos"]
    rows = [
        (
            f"refresh: `git ls-remote` of all {n}, {r['host_concurrency']} at once (one host)",
            f"{r['refresh_s']} s ({r['per_check_ms']} ms each)",
        ),
        (
            f"one `archive_repo_job` run per repository (`unchanged`), sample of {r['sample']}",
            f"{r['per_run_s']} s mean ({', '.join(map(str, r['run_s']))})",
        ),
        (
            f"the same {n} as runs, **extrapolated** from that sample",
            f"{r['runs_extrapolated_s']} s",
        ),
        ("refresh is cheaper by", f"**{r['ratio']}x**"),
    ]
    table = "\n".join(f"| {what} | {value} |" for what, value in rows)
    out.write_text(
        f"""# Refresh benchmark

`python -m benchmarks.refresh --repos {n} --sample {r["sample"]}` on {r["cpus"]} cores,
{datetime.now(UTC):%Y-%m-%d}. {n} unchanged repositories served by the local git server.

| what | time |
| --- | --- |
{table}

Targets (issue 12): the {n} checked in at most 60 s on two cores; at least 50x cheaper
than a run each. The runs are measured in process (`execute_in_process`, no run worker
launch); a queued run in a deployment also pays a process start, so the real ratio is larger.

```json
{json.dumps(r, indent=1)}
```
"""
    )


if __name__ == "__main__":
    sys.exit(main())
