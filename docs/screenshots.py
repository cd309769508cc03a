"""Take docs/operations.md's pictures of the `restorable` Checks tab and the `vault_stats` plots
from a real run: a local git server, the local object store, SQLite lineage, a Dagster instance
in a temporary DAGSTER_HOME, the Dagster webserver, and headless Chromium.

    .venv/bin/python -m docs.screenshots [OUT_DIR]      (default docs/img; needs chromium)
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

from tests.support.repos import ServedRepo
from tests.support.servers import REPO_ROOT, free_port, git_http_server, running


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, click a button by its
    label (the UI keeps some views, like metadata plots, in component state only), capture."""

    def __init__(self, tmp: Path) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            sys.exit("docs/screenshots.py: no chromium on PATH (apt-get install chromium)")
        port = free_port()
        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1500,950",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={tmp / 'chromium'}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as answer:
                    pages = [t for t in json.load(answer) if t["type"] == "page"]
                break
            except OSError:
                time.sleep(0.2)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                return message.get("result", {})

    def shoot(self, url: str, out: Path, click: str | None = None) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(8)
        if click:
            self.call(
                "Runtime.evaluate",
                expression=(
                    "const b=[...document.querySelectorAll('button')]"
                    f".find(e=>e.textContent.trim()==={json.dumps(click)});"
                    "b.click(); b.scrollIntoView({block:'start'});"
                ),
            )
            time.sleep(5)
        shot = self.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


def main(out_dir: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="repovault-shots-"))
    os.environ.update(
        DAGSTER_HOME=str(tmp / "dagster"),
        REPOVAULT_LOCAL_STORE=str(tmp / "store"),
        REPOVAULT_DB_URL=f"sqlite:///{tmp / 'lineage.db'}",
        REPOVAULT_ALLOWED_HOSTS="127.0.0.1",
        REPOVAULT_ALLOWED_SCHEMES="http",
        REPOVAULT_WORK_DIR=str(tmp / "work"),
        REPOVAULT_KAFKA_BOOTSTRAP=os.environ.get("REPOVAULT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    )
    os.environ.pop("REPOVAULT_S3_ENDPOINT", None)
    (tmp / "dagster").mkdir()
    (tmp / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    from dagster import AssetCheckKey, AssetKey, DagsterInstance
    from dagster._core.nux import set_nux_seen

    set_nux_seen()  # no "join the community" dialog over the pictures

    from repovault_pipeline.core.intake.runs import request_tags
    from repovault_pipeline.core.lineage.requests import new_request_id, now
    from repovault_pipeline.definitions import defs
    from repovault_pipeline.partitions import repositories

    check = AssetCheckKey(AssetKey("repo_archive"), "restorable")
    archive = defs.resolve_job_def("archive_repo_job")
    stats_job = defs.resolve_job_def("vault_stats_job")
    with git_http_server(tmp / "served", tmp / "git.log") as base:
        instance = DagsterInstance.get()
        repo_ids = []
        for n, name in enumerate(["api-gateway", "billing", "docs-site"]):
            repo = ServedRepo(tmp / "served", tmp / "copies", base, "acme", name)
            for i in range(n + 2):
                repo.commit({f"src/file{i}.txt": f"{name} {i}\n" * (200 * (n + 1))})
            repo.push()
            repo_id = repo.url.removeprefix("http://").removesuffix(".git")
            repo_ids.append(repo_id)
            instance.add_dynamic_partitions(repositories.name, [repo_id])
            tags = request_tags(new_request_id(), repo.url, "cli", now())
            archive.execute_in_process(partition_key=repo_id, instance=instance, tags=tags)
            stats_job.execute_in_process(instance=instance)
            time.sleep(1)
        # A restore drill after someone deleted a file from billing's tree/.
        bucket_dir = next((tmp / "store").glob("*billing*"))
        (bucket_dir / "tree" / "src" / "file0.txt").unlink()
        for repo_id in sorted(repo_ids, key=lambda r: "billing" in r):  # the failure last
            archive.get_subset(
                asset_selection=set(), asset_check_selection={check}
            ).execute_in_process(partition_key=repo_id, instance=instance, raise_on_error=False)
        stats_job.execute_in_process(instance=instance)

    port = free_port()
    web = [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port)]
    web += ["-m", "repovault_pipeline.definitions"]
    out_dir.mkdir(parents=True, exist_ok=True)
    with running(web, port, tmp / "web.log"):
        time.sleep(5)
        ui = f"http://127.0.0.1:{port}"
        browser = Browser(tmp)
        try:
            browser.shoot(
                f"{ui}/assets/repo_archive?view=checks", out_dir / "restorable-checks.png"
            )
            browser.shoot(f"{ui}/assets/vault_stats", out_dir / "vault-stats-plots.png", "Plots")
        finally:
            browser.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"screenshots in {out_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "docs" / "img")
