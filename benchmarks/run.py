"""`make bench`: generate the repositories, serve them, run every contender, write the report.

    python -m benchmarks.run [--quick] [--runs N] [--sizes small,medium,large]
                             [--real [NAME=]PATH,...] [--rtt-ms 10] [--rtt-sizes medium]
                             [--messages 10000] [--chain 10]
                             [--out benchmarks/RESULTS.md] [--work benchmarks/work]

One machine, one go: the git smart-HTTP server and moto's S3 server of the test suite on
loopback, the embedded Kafka-protocol broker on a free port, SQLite lineage in the work folder.
Per size and round the contenders run one after another (a, b, d, c, e, f, g), each in a fresh
process with its own bucket prefix, so drift hits all of them alike; every contender but e and
f starts on a fresh S3 server (a new moto process). Every result is checked in the bucket
(bundle present, one object per HEAD file) before it counts. Then, per size, the incremental
section: a chain of ten snapshots of ten small commits against one full bundle, stored bytes
and restore times (medians of as many restores as rounds).
Real repositories (`--real`, bare repositories on disk) get a column of their own, with the
contenders that need no second copy of the work (a, c, e, f, g) and the incremental section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3

from tests.support.kafka import OwnBroker
from tests.support.servers import REPO_ROOT, FreshS3, git_http_server, serving

from . import real, report
from .contenders import CONTENDERS, TREE
from .memory import TreeSampler, mb, spawn_isolated
from .repos import SPECS, BenchRepo, ensure_repo

QUICK_INJECTOR_MESSAGES = 1000
QUICK_CHAIN = 3  # snapshots in the quick run's incremental section (a smoke run, not a measure)
RUN_ORDER = "abdcefg"
REAL_ORDER = "acefg"  # b and d add nothing on a real repository that c does not show
assert sorted(RUN_ORDER) == sorted(CONTENDERS)
FULL_OUT = REPO_ROOT / "benchmarks" / "RESULTS.md"
QUICK_OUT = REPO_ROOT / "benchmarks" / "work" / "quick" / "RESULTS.md"
CHILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Column:
    """One column of the report: a repository, and the S3 endpoint it is archived to."""

    label: str
    repo: BenchRepo
    endpoint: str
    contenders: str = RUN_ORDER
    latency: bool = False  # behind the latency proxy: no incremental section


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@contextmanager
def local_broker(log_file: Path) -> Iterator[str]:
    """The embedded broker on a free port: a broker nobody else uses, so status events (and
    the injector's 10,000 messages) neither wait on a missing broker nor meet old data."""
    broker = OwnBroker(log_file)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


class Bench:
    """The servers, the environment of every contender process, and the measurements."""

    def __init__(self, work: Path, s3_server: FreshS3, bootstrap: str) -> None:
        self.work = work
        self.logs = work / "logs"
        self.s3_server = s3_server
        s3_endpoint = s3_server.endpoint
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("REPOVAULT_")}
        self.env = {
            **inherited,
            "REPOVAULT_S3_ENDPOINT": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "REPOVAULT_KAFKA_BOOTSTRAP": bootstrap,
            "REPOVAULT_DB_URL": f"sqlite:///{work / 'lineage.db'}",
            "REPOVAULT_ALLOWED_HOSTS": "127.0.0.1",
            "REPOVAULT_ALLOWED_SCHEMES": "http",
            "REPOVAULT_KEEP_SNAPSHOTS": "10",
            "PYTHONPATH": str(REPO_ROOT),
        }
        for key in ("GITHUB_TOKEN", "REPOVAULT_SSH_KEY", "DAGSTER_HOME"):
            self.env.pop(key, None)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def child(self, module: str, args: list[str], env: dict[str, str], label: str) -> dict:
        """Run `python -m module args` in a fresh process; return the JSON of its last stdout
        line, with the sampled peaks of its process tree added."""
        with (self.logs / f"{label}.log").open("ab") as err:
            proc = spawn_isolated(
                [sys.executable, "-m", module, *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
            )
            with TreeSampler(proc.pid) as sampler:
                try:
                    stdout, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
        lines = [ln for ln in stdout.decode().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{module} {args[0]} failed ({proc.returncode}); see {err.name}")
        return {
            **json.loads(lines[-1]),
            "tree_rss_mb": mb(sampler.total_peak),
            "git_rss_mb": mb(sampler.git_peak),
        }

    def contender(
        self,
        name: str,
        repo: BenchRepo,
        prefix: str,
        endpoint: str,
        extra: dict[str, str] | None = None,
    ) -> dict:
        work = self.work / "tmp" / name
        env = {
            **self.env,
            "REPOVAULT_BUCKET_PREFIX": prefix,
            "REPOVAULT_WORK_DIR": str(work),
            "REPOVAULT_S3_ENDPOINT": endpoint,
            **(extra or {}),
        }
        started = time.perf_counter()
        result = self.child("benchmarks.contenders", [name, repo.url, str(work)], env, name)
        result["process_s"] = round(time.perf_counter() - started, 3)
        self.verify(name, repo, prefix, result)
        return result

    def verify(self, name: str, repo: BenchRepo, prefix: str, result: dict) -> None:
        """The contender did the job: a bundle and one object per HEAD file in its bucket;
        RepoVault's second and third runs did only what they should."""
        names = [b["Name"] for b in self.s3.list_buckets()["Buckets"]]
        [bucket] = [name for name in names if name.startswith(prefix)]
        keys = [
            k
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for k in (o["Key"] for o in page.get("Contents", []))
        ]
        tree = sum(1 for k in keys if k.startswith(TREE))
        bundles = sum(1 for k in keys if k.endswith("repo.bundle"))
        expected = {"e": "unchanged"}.get(name, "completed")
        problems = []
        if tree != repo.head_files:
            problems.append(f"{tree} tree objects, HEAD has {repo.head_files} files")
        if not bundles:
            problems.append("no bundle")
        if result["outcome"] != expected:
            problems.append(f"outcome {result['outcome']}, expected {expected}")
        if name in "fg" and result["files_uploaded"] != 1:
            problems.append(f"{result['files_uploaded']} files uploaded after a one-file change")
        if problems:
            raise RuntimeError(f"contender {name} on {repo.name}: {'; '.join(problems)}")

    def round(self, column: Column, number: int) -> list[dict]:
        """Every contender once. The S3 server is replaced by a fresh one after each but c and
        e, so a, b, d, c and g each start on a new, empty server (moto slows down as it holds
        more objects, and stays slower after they are deleted: d, which followed b's 10,000
        PUTs and deletes on one server, uploaded 2-6 s slower than c); e and f follow c
        on its bucket, f after the one-file commit. g is f with a kept mirror, on its own
        bucket: a first archive with the mirror (not counted; its time is kept as
        `mirror_first_s`) warms the mirror, then the one-file commit is archived."""
        results = []
        repo = column.repo
        mirror = self.work / "tmp" / "mirror"
        for name in column.contenders:
            prefix = f"r{number}{'c' if name in 'ef' else name}-"
            extra = {"REPOVAULT_MIRROR_DIR": str(mirror)} if name == "g" else {}
            first = self.contender("c", repo, prefix, column.endpoint, extra) if extra else {}
            repo.set_head(changed=name in "fg")
            try:
                result = self.contender(name, repo, prefix, column.endpoint, extra)
            finally:
                repo.set_head(changed=False)
            if first:
                result["mirror_first_s"] = first["seconds"]
                subprocess.run(["rm", "-rf", str(mirror)], check=True)
            result.update(size=column.label, round=number)
            log(
                f"{column.label} round {number + 1} {name}: {result['seconds']:.2f} s, "
                f"python {result['rss_mb']:.0f} MB, git {result['git_rss_mb']:.0f} MB, "
                f"total {result['tree_rss_mb']:.0f} MB"
            )
            results.append(result)
            if name not in "ce":
                self.s3_server.restart()
        return results

    def chain(self, column: Column, length: int, restores: int) -> dict:
        """The incremental section: `length` archives, each after one small commit (the first
        stores a full bundle, the next ones incremental links, REPOVAULT_CHAIN_MAX as set), then
        the last state once more as a full bundle (REPOVAULT_CHAIN_MAX=0) on its own bucket;
        the stored bundle bytes of both, and the time to restore the latest snapshot of each:
        `restores` times, the two in turn, their medians (a restore of the small repository
        takes a third of a second, which one sample measures poorly). Every step is a fresh
        process; the restores must give the last commit."""
        repo = column.repo
        commits = repo.small_commits(length)
        links = []
        try:
            for commit in commits:
                repo.move_main(commit)
                links.append(self.contender("c", repo, "k-", column.endpoint)["seconds"])
            full = self.contender("c", repo, "kf-", column.endpoint, {"REPOVAULT_CHAIN_MAX": "0"})
        finally:
            repo.set_head(changed=False)
        stored, count = self.bundle_bytes("k-")
        full_bytes, _ = self.bundle_bytes("kf-")
        if count != length:
            raise RuntimeError(f"chain on {repo.name}: {count} bundles, expected {length}")
        times: dict[str, list[float]] = {"k-": [], "kf-": []}
        for prefix in ("k-", "kf-") * restores:
            env = {
                **self.env,
                "REPOVAULT_BUCKET_PREFIX": prefix,
                "REPOVAULT_S3_ENDPOINT": column.endpoint,
            }
            dest = self.work / "tmp" / "restored"
            done = self.child(
                "benchmarks.contenders", ["restore", repo.url, str(dest)], env, "restore"
            )
            if done["head_commit"] != commits[-1]:
                raise RuntimeError(
                    f"restore of {prefix} gave {done['head_commit']}, not {commits[-1]}"
                )
            times[prefix].append(done["seconds"])
        chain_s, full_s = statistics.median(times["k-"]), statistics.median(times["kf-"])
        self.s3_server.restart()
        result = {
            "size": column.label,
            "snapshots": length,
            "stored_bytes": stored,
            "full_bytes": full_bytes,
            "restore_chain_s": chain_s,
            "restore_full_s": full_s,
            "restore_chain_samples": times["k-"],
            "restore_full_samples": times["kf-"],
            "link_archive_s": links,
            "full_archive_s": full["seconds"],
        }
        log(
            f"{column.label} chain of {length}: {stored / full_bytes:.2f}x one full bundle, "
            f"restore {chain_s:.2f} s vs {full_s:.2f} s (medians of {restores})"
        )
        return result

    def bundle_bytes(self, prefix: str) -> tuple[int, int]:
        """Total size and number of the code bundles in the bucket under `prefix`."""
        [bucket] = [
            b["Name"] for b in self.s3.list_buckets()["Buckets"] if b["Name"].startswith(prefix)
        ]
        sizes = [
            o["Size"]
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
            if o["Key"].endswith("repo.bundle") and not o["Key"].startswith("wiki/")
        ]
        return sum(sizes), len(sizes)

    def injector(self, messages: int, git_url: str) -> dict:
        log(f"injector: {messages} messages")
        return self.child("benchmarks.injector", [str(messages), git_url], self.env, "injector")


@contextmanager
def latency_proxy(s3_endpoint: str, rtt_ms: float, log_file: Path) -> Iterator[str]:
    """The S3 server behind `benchmarks.latency_proxy`: same server, `rtt_ms` farther away."""
    target = s3_endpoint.rsplit(":", 1)[1]

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "benchmarks.latency_proxy", str(port), target, str(rtt_ms)]

    with serving(command, log_file) as port:
        yield f"http://127.0.0.1:{port}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="small repository, one run, 1,000 messages"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds per size (median of these)")
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument(
        "--real",
        default="",
        metavar="[NAME=]PATH,...",
        help="bare git repositories on disk (`git clone --mirror URL`) measured too; "
        "a copy is served, the repository itself is not written to",
    )
    parser.add_argument("--messages", type=int, default=10_000, help="injector messages")
    parser.add_argument(
        "--chain", type=int, default=10, help="snapshots in the incremental section, per size"
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=10.0,
        help="round trip added by the latency proxy for --rtt-sizes",
    )
    parser.add_argument(
        "--rtt-sizes",
        default="medium",
        help="sizes measured again through the latency proxy ('' for none)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default benchmarks/RESULTS.md; "
        "with --quick benchmarks/work/quick/RESULTS.md (the committed one stays)",
    )
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "benchmarks" / "work")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.rtt_sizes = "small", 1, ""
        args.messages = min(args.messages, QUICK_INJECTOR_MESSAGES)
        args.chain = min(args.chain, QUICK_CHAIN)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else FULL_OUT
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.rtt_sizes = [s.strip() for s in args.rtt_sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes + args.rtt_sizes if s not in SPECS]
    if unknown or args.runs < 1 or args.chain < 2:
        parser.error(
            f"sizes are {', '.join(SPECS)}; runs at least 1, chain 2 (got {unknown or args.runs})"
        )
    try:
        args.real = [real.parse(entry) for entry in args.real.split(",") if entry.strip()]
    except real.NotABareRepository as exc:
        parser.error(str(exc))
    names = [name for name, _ in args.real]
    if len(set(names)) != len(names):
        parser.error(f"--real: two repositories named alike ({', '.join(names)}); use NAME=PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    for stale in ("tmp", "logs"):
        subprocess.run(["rm", "-rf", str(work / stale)], check=True)
    (work / "logs").mkdir(parents=True)
    (work / "lineage.db").unlink(missing_ok=True)
    started = datetime.now(UTC)
    with ExitStack() as stack:
        served = work / "served"
        served.mkdir(exist_ok=True)
        git_url = stack.enter_context(git_http_server(served, work / "logs" / "git.log"))
        s3_server = FreshS3(work / "logs" / "moto.log")
        stack.callback(s3_server.stop)
        s3 = s3_server.endpoint
        bootstrap = stack.enter_context(local_broker(work / "logs" / "broker.log"))
        bench = Bench(work, s3_server, bootstrap)
        repos = {}
        for size in dict.fromkeys(args.sizes + args.rtt_sizes):
            log(f"repository {size}: generating or reusing")
            repos[size] = ensure_repo(SPECS[size], served, git_url)
        columns = [Column(size, repos[size], s3) for size in args.sizes]
        for name, path in args.real:
            log(f"real repository {name}: serving a copy of {path}")
            repos[name] = real.serve(name, path, served, git_url)
            columns.append(Column(f"real {name}", repos[name], s3, REAL_ORDER))
        if args.rtt_sizes:
            far = stack.enter_context(latency_proxy(s3, args.rtt_ms, work / "logs" / "proxy.log"))
            columns += [
                Column(f"{size}, {args.rtt_ms:g} ms RTT", repos[size], far, latency=True)
                for size in args.rtt_sizes
            ]
        samples = []
        for column in columns:
            for number in range(args.runs):
                samples += bench.round(column, number)
        chains = [
            bench.chain(column, args.chain, args.runs) for column in columns if not column.latency
        ]
        injector = bench.injector(args.messages, git_url)
    results = report.Results(
        started=started,
        finished=datetime.now(UTC),
        quick=args.quick,
        runs=args.runs,
        repos=[report.RepoRow.of(r) for r in repos.values()],
        columns=[c.label for c in columns],
        real_columns=[c.label for c in columns if c.repo.real],
        samples=samples,
        injector=injector,
        chains=chains,
    )
    chart = report.write(results, args.out)
    log(f"wrote {args.out}" + (f" and {chart}" if chart else " (chart skipped: no matplotlib)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
