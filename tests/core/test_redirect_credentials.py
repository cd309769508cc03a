"""No credential follows a redirect to another host, in any HTTP client of RepoVault: a forge
API on 127.0.0.1 that redirects to `localhost` on another port (another host, as a browser or
requests sees it) must never see the token arrive there. Real servers on loopback, real clients:
the forge-metadata client (GitLab's `PRIVATE-TOKEN`, GitHub's `Authorization`), the session
every API client is built on, and git (its `http.extraheader`)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from repovault_pipeline.core.common.errors import ArchiveError
from repovault_pipeline.core.common.http import api_session
from repovault_pipeline.core.common.identity import parse_repo_url
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.sources.forges.github import GitHub
from repovault_pipeline.core.sources.forges.gitlab import GitLab
from repovault_pipeline.core.sources.metadata.fetch import MetadataClient
from repovault_pipeline.core.vault.gitops import GitClient

TOKEN = "glpat-" + "R3d1rect" * 3
# as git sends it: `Authorization: Basic base64(oauth2:TOKEN)`
BASIC = base64.b64encode(f"oauth2:{TOKEN}".encode()).decode()


class Recorder:
    """An HTTP server that records every request's path and headers and answers with `answer`
    (status, headers, body) for each path."""

    def __init__(self, host: str, answer) -> None:  # type: ignore[no-untyped-def]
        self.seen: list[tuple[str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                recorder.seen.append((self.path, dict(self.headers)))
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def received_token(self) -> bool:
        return any(
            TOKEN in value or BASIC in value
            for _, headers in self.seen
            for value in headers.values()
        )


@contextmanager
def forge_redirecting_elsewhere(path_prefix: str = "") -> Iterator[tuple[Recorder, Recorder]]:
    """(forge, elsewhere): the forge on 127.0.0.1 answers every request with a redirect to the
    same path on `localhost`, another port: another host."""
    elsewhere = Recorder(
        "localhost", lambda path: (200, {"Content-Type": "application/json"}, b"[]")
    )
    forge = Recorder(
        "127.0.0.1",
        lambda path: (302, {"Location": f"http://localhost:{elsewhere.port}{path}"}, b""),
    )
    try:
        yield forge, elsewhere
    finally:
        forge.close()
        elsewhere.close()


@pytest.mark.parametrize("forge_name", ["gitlab", "github"])
def test_the_metadata_client_never_takes_the_token_to_another_host(forge_name: str) -> None:
    with forge_redirecting_elsewhere() as (forge, elsewhere):
        api = f"http://127.0.0.1:{forge.port}/api/v4"
        api_forge = {"gitlab": GitLab, "github": GitHub}[forge_name](api, TOKEN)
        client = MetadataClient(api_forge, Settings.from_env({}))
        # the redirect is followed without the credential (release assets live on other hosts)
        assert list(client.pages("/projects/o%2Fr/issues", {})) == []
    assert forge.received_token(), "the forge itself gets the token"
    assert elsewhere.seen, "the redirect was followed"
    assert not elsewhere.received_token()


def test_the_session_keeps_the_token_on_a_redirect_within_the_host() -> None:
    """Same host, same port: a redirect inside the forge keeps its credential."""
    same = Recorder(
        "127.0.0.1",
        lambda path: (302, {"Location": "/final"}, b"") if path == "/start" else (200, {}, b"ok"),
    )
    try:
        session = api_session(0, 0, "test")
        answer = session.get(
            f"http://127.0.0.1:{same.port}/start", headers={"PRIVATE-TOKEN": TOKEN}, timeout=5
        )
        assert answer.text == "ok"
        assert [p for p, h in same.seen if h.get("PRIVATE-TOKEN") == TOKEN] == ["/start", "/final"]
    finally:
        same.close()


def test_git_follows_no_redirect_with_the_token(tmp_path: Path) -> None:
    """git sends `http.extraheader` on every request after a redirect, to the new host."""
    with forge_redirecting_elsewhere() as (forge, elsewhere):
        settings = Settings.from_env(
            {
                "GITLAB_TOKEN": TOKEN,
                "REPOVAULT_GITLAB_API": f"http://127.0.0.1:{forge.port}/api/v4",
                "REPOVAULT_ALLOWED_SCHEMES": "http",
                "REPOVAULT_ALLOWED_HOSTS": "127.0.0.1",
                "REPOVAULT_SSH_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
            }
        )
        ref = parse_repo_url(f"http://127.0.0.1:{forge.port}/o/r.git", ("http",), ("127.0.0.1",))
        with pytest.raises(ArchiveError):
            GitClient(settings).ls_remote(ref)
    assert forge.received_token(), "the forge itself gets the token"
    assert not elsewhere.received_token()
