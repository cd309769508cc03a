"""`POST /api/repositories/{repo_id}/restore` over HTTP against `repovault serve`, the git
server (pushes, a credential required) and S3: the push lands and is said, a target that is
not empty is a 409 and stays as it was, bad input a 400, an unknown snapshot a 404, a read
token a 403; the push URL's credential is in no answer and no log line."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.core.test_push_restore import (  # noqa: F401 (the fixtures)
    TOKEN,
    empty_target,
    remote_refs,
    through,
    token_server,
)
from tests.support.api import make_token, session


def test_a_snapshot_is_pushed_over_the_api_and_refusals_change_nothing(
    api: str,
    http: requests.Session,
    archived,
    empty_target,  # noqa: F811
    token_server,  # noqa: F811
    api_log: Path,
) -> None:
    repo, result = archived
    _, url = empty_target()
    secured, shown, _ = through(token_server, url)
    where = f"{api}/api/repositories/{result.repo_id}/restore"

    done = http.post(where, json={"push_url": secured}, timeout=120)
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["repo_id"] == result.repo_id and answer["code"]["url"] == shown
    assert answer["code"]["snapshot_id"] == result.snapshot_id
    assert (answer["code"]["branches"], answer["code"]["tags"]) == (2, 1)
    assert "wiki" not in answer and answer["warnings"] == []
    assert remote_refs(url) == repo.refs()

    again = http.post(where, json={"push_url": secured}, timeout=120)
    assert again.status_code == 409 and "pass --force" in again.json()["error"]
    forced = http.post(where, json={"push_url": secured, "force": True}, timeout=120)
    assert forced.status_code == 200 and remote_refs(url) == repo.refs()

    for body, status, said in [
        ({"push_url": "file:///etc/x.git"}, 400, "local paths"),
        ({}, 400, "give --push URL"),
        ({"push_url": secured, "snapshot": "nope"}, 400, "not a snapshot id"),
        ({"push_url": secured, "snapshot": "20200101T000000Z-000000000000"}, 404, "no snapshot"),
        ({"push_url": repo.url}, 409, "itself"),
    ]:
        refused = http.post(where, json=body, timeout=60)
        assert refused.status_code == status and said in refused.json()["error"], refused.text
    with session(make_token("read")) as reader:
        assert reader.post(where, json={"push_url": secured}, timeout=30).status_code == 403
    assert remote_refs(url) == repo.refs()
    for text in (done.text, again.text, forced.text, api_log.read_text(errors="replace")):
        assert TOKEN not in text
