from repovault_pipeline.core.settings import Settings
from repovault_pipeline.core.identity import parse_repo_url
from repovault_pipeline.core.snapshot import SnapshotWriter, SnapshotReader
from repovault_pipeline.core.store import open_store
import logging
logging.basicConfig(level=logging.INFO)

def test_smoke(vault_env, make_repo):
    repo = make_repo()
    repo.commit({"README.md": "hello", "bin/data.bin": bytes(range(256)) * 100})
    repo.symlink("passwd", "/etc/passwd")
    repo.commit(message="link")
    repo.branch("dev"); repo.commit({"dev.txt": "dev"}); repo.checkout("main")
    repo.tag("v1", annotated=True)
    repo.push()
    s = Settings.from_env()
    ref = parse_repo_url(repo.url, s.allowed_schemes, s.allowed_hosts)
    w = SnapshotWriter(s, open_store(s))
    r = w.archive(ref)
    print(r)
    r2 = w.archive(ref)
    print(r2)
    assert r2.outcome == "unchanged"
    m = SnapshotReader(w.store, r.bucket).latest()
    print(m)
    assert m["refs"] == repo.refs()
