"""`make bench QUICK=1` completes and writes its table.

The benchmark is not a timed test: nothing here judges the numbers. It needs git, moto's S3
server and the embedded broker like the rest of the suite; one missing fails the run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.repos import ServedRepo, git
from tests.support.servers import REPO_ROOT

NUMBER = r"\d+(?:\.\d+)?"


def quick_bench(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict]:
    """`python -m benchmarks.run --quick ARGS` as `make bench QUICK=1` runs it: RESULTS.md and
    results.json."""
    out = tmp_path / "RESULTS.md"
    where = ("--out", str(out), "--work", str(tmp_path / "work"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", *args, *where],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out.read_text(), json.loads(out.with_name("results.json").read_text())


def served_by_a_user(tmp_path: Path) -> ServedRepo:
    """A small bare repository as `git clone --mirror` of a forge gives: a tag, a binary
    file, and a forge's `refs/pull/*`."""
    user = ServedRepo(tmp_path / "user", tmp_path / "checkout", "http://unused", "acme", "tool")
    user.commit({"README.md": "# tool\n\nA tool.\n", "src/tool.py": "print('tool')\n"})
    user.tag("v1")
    user.commit({"src/tool.py": "print('tool 2')\n", "bin/logo.png": b"\x89PNG\0\0"})
    user.push()
    git(user.bare, "update-ref", "refs/pull/1/head", user.head())
    return user


@pytest.mark.timeout(240)
def test_quick_mode_writes_every_contender_ratio_and_chain_and_a_real_repositorys(
    tmp_path: Path,
) -> None:
    """One quick run (each takes a minute or more) with a real repository beside the generated
    small one: every table, and the real repository's column, which leaves it untouched."""
    user = served_by_a_user(tmp_path)
    refs_before = git(user.bare, "for-each-ref")
    table, raw = quick_bench(tmp_path, "--real", str(user.bare), timeout=230)

    for name in "abcdefg":  # the generated repository's section comes first
        row = re.search(rf"^\| {name}\. [^|]+\|(.*)$", table, re.MULTILINE)
        assert row, f"no row for contender {name}"
        cells = [c.strip() for c in row.group(1).split("|") if c.strip()]
        assert len(cells) == 8 and all(
            re.fullmatch(rf"{NUMBER}( - {NUMBER})?|[\d,]+", c) for c in cells
        ), row.group(0)
    ratios = ("c / a", "b / c", "d - c", "e / c", "f / c", "g / c", "chain: ", "restore last")
    for ratio in (*ratios, "peak RSS of c"):
        assert re.search(rf"^\| {re.escape(ratio)}[^|]*\| [^|]+ \| {NUMBER}", table, re.MULTILINE)
    assert "## Incremental snapshots (chains)" in table
    chain = re.search(r"^\| small \| 3 \|(.*)$", table, re.MULTILINE)
    assert chain, "no row for the incremental section"
    cells = [c.strip() for c in chain.group(1).split("|") if c.strip()]
    assert len(cells) == 8 and all(re.fullmatch(NUMBER, c) for c in cells), chain.group(0)
    assert "## Injector throughput" in table
    assert re.search(r"\| 1,000 → 1,000 \| \d+ \| [\d,]+ \|", table)
    small = sorted(s["contender"] for s in raw["samples"] if s["size"] == "small")
    assert small == list("abcdefg")
    assert [c["snapshots"] for c in raw["chains"]] == [3, 3]
    assert all(len(c["link_archive_s"]) == 3 for c in raw["chains"])

    source = re.escape(str(user.bare))
    row = rf"^\| tool \| {source} \| 3 \| {NUMBER} \| {NUMBER} \| 2 \| 2 \|$"  # 2 commits, 2 refs
    assert re.search(row, table, re.MULTILINE)
    section = table.split("### real tool\n", 1)[1].split("\n#", 1)[0]
    assert re.findall(r"^\| (\w)\. ", section, re.MULTILINE) == list("acefg")
    assert re.search(r"^\| measure \| target \| small \| real tool \| verdict \|$", table, re.M)
    for ratio in ("c / a", "e / c", "f / c", "g / c", "chain: ", "restore last"):
        assert re.search(rf"^\| {re.escape(ratio)}.*\| {NUMBER} \| [^|]+ \|$", table, re.MULTILINE)
    assert re.search(r"^\| real tool \| 3 \|", table, re.MULTILINE), "no chain row"
    assert raw["real_columns"] == ["real tool"]
    ran = sorted(s["contender"] for s in raw["samples"] if s["size"] == "real tool")
    assert ran == list("acefg")
    assert git(user.bare, "for-each-ref") == refs_before


def test_real_that_is_not_a_bare_repository_is_refused_in_one_line(tmp_path: Path) -> None:
    args = ("--quick", "--real", str(tmp_path), "--work", str(tmp_path / "work"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{tmp_path} is not a bare git repository" in proc.stderr
    assert "git clone --mirror" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "work").exists()


def test_d_minus_c_pairs_the_contenders_of_each_round() -> None:
    """One round whose uploads were 15 s slower moves one paired difference, not the row (as
    the third large round of note 12 moved the difference of the medians to 8.45 s)."""
    from datetime import UTC, datetime

    from benchmarks.report import TARGETS, Results

    rounds = [(75.02, 75.31), (61.08, 60.68), (82.39, 66.57)]  # (d, c) per round, note 12
    samples = [
        {"size": "large", "contender": name, "round": n, "seconds": seconds}
        for n, pair in enumerate(rounds)
        for name, seconds in zip("dc", pair, strict=True)
    ]
    at = datetime.now(UTC)
    results = Results(at, at, False, 3, [], ["large"], samples, {})
    [target] = [t for t in TARGETS if t.label.startswith("d - c")]
    assert target.cell(results, "large") == "0.40 s"
    assert target.verdict(results) == "pass"
    assert results.median("large", "d") - results.median("large", "c") > 2  # unpaired: a miss
