"""Restore to a forge (`repovault restore --push URL`), against real servers: git over smart
HTTP (pushes and its LFS endpoint), S3 (moto server), a fake forge API on loopback. What a user
checks: the target lists exactly the snapshot's branches and tags (an incremental chain, and an
older snapshot too), holds its LFS objects and its wiki; a target that is not empty, or the
source itself, is refused with one line and left as it was, overwritten with --force; --create
makes the repository through the forge's API with the token sent only there; a credential in
the push URL is used and never printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repovault_pipeline.cli import main as cli
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.lfs import local_path
from repovault_pipeline.core.vault.push import InvalidTarget, push_target
from tests.core.test_chains import manifest_of
from tests.core.test_lfs import lfs_repo  # noqa: F401 (the fixture)
from tests.core.test_wiki import with_wiki  # noqa: F401 (the fixture)
from tests.support.archiving import archive
from tests.support.forge_api import ForgeApi, forge_api
from tests.support.git_http_server import logged_requests
from tests.support.repos import GIT_ENV, ServedRepo, git
from tests.support.servers import git_http_server
from tests.test_cli import repovault

TOKEN = "Rst0reT0ken-9f8e7d6c5b4a"  # what a person puts in the push URL; never printed


def remote_refs(url: str) -> dict[str, str]:
    """The branches and tags `url` lists, as anyone would read them: `git ls-remote`."""
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(
        ["git", "ls-remote", url], capture_output=True, text=True, check=True, env=env
    ).stdout
    pairs = (line.split("\t") for line in out.splitlines())
    return {
        name: sha
        for sha, name in pairs
        if name.startswith(("refs/heads/", "refs/tags/")) and not name.endswith("^{}")
    }


@pytest.fixture
def empty_target(served_root: Path, git_base_url: str) -> Callable[..., tuple[Path, str]]:
    """An empty bare repository on the git server (as a forge makes one): its path and URL."""

    def make(name: str = "restored", owner: str | None = None) -> tuple[Path, str]:
        owner = owner or f"target{uuid.uuid4().hex[:8]}"
        bare = served_root / owner / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(bare.parent, "init", "-q", "--bare", "-b", "main", bare.name)
        return bare, f"{git_base_url}/{owner}/{name}.git"

    return make


@pytest.fixture
def token_server(served_root: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The same repositories served by a git server that answers 401 without `restorer` and
    TOKEN: a forge the push URL's credentials must reach (LFS requests too)."""
    log = tmp_path / "token-git.log"
    with git_http_server(served_root, log, require_token=TOKEN, token_user="restorer") as url:
        yield url, log


def through(token_server: tuple[str, Path], url: str) -> tuple[str, str, Path]:
    """`url`'s repository on the token server: with the credentials in the URL, as shown
    (without them), and the server's log."""
    base_url, log = token_server
    path = url.split("/", 3)[3]
    secured = f"http://restorer:{TOKEN}@{base_url.removeprefix('http://')}/{path}"
    return secured, f"{base_url}/{path}", log


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli(args)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


def test_a_chain_pushed_to_an_empty_repository_equals_its_snapshot_and_an_older_one_too(
    vault_env: dict[str, str],
    make_repo: Callable[..., ServedRepo],
    empty_target,
    token_server,
    capsys: pytest.CaptureFixture,
) -> None:
    repo = make_repo("chained")
    repo.commit({"README.md": "# chained\n"})
    repo.tag("v1", annotated=True)
    repo.branch("feature")
    repo.commit({"f.txt": "f\n"})
    repo.checkout("main")
    repo.push()
    first, first_refs = archive(repo), repo.refs()
    repo.commit({"README.md": "# chained, 2\n"})
    git(repo.work, "branch", "-D", "feature")
    repo.tag("v2")
    repo.push()
    archive(repo)
    repo.commit({"c.txt": "3\n"})
    repo.push()
    last, last_refs = archive(repo), repo.refs()
    assert manifest_of(last)["base"] is not None  # an incremental chain

    bare, url = empty_target()
    secured, shown, log = through(token_server, url)
    code, out, err = run(["restore", repo.url, "--push", secured], capsys)
    assert code == 0, err
    assert remote_refs(url) == last_refs  # exactly: the deleted branch is not brought back
    assert f"pushed {repo.repo_id} snapshot {last.snapshot_id} to {shown}: 1 branches, 2 tags" in (
        out
    )
    assert "wiki: not pushed" in out and err == ""
    assert git(bare, "symbolic-ref", "HEAD") == "refs/heads/main"
    # The credential went in a header, to that server only, on every request.
    requests = logged_requests(log, "/" + url.split("/", 3)[3])
    assert requests and all(r.authorization for r in requests)

    _, older = empty_target()
    code, out, err = run(
        ["restore", repo.url, "--push", older, "--snapshot", first.snapshot_id], capsys
    )
    assert code == 0, err
    assert remote_refs(older) == first_refs and f"snapshot {first.snapshot_id}" in out


def test_lfs_objects_reach_the_targets_lfs_store_with_the_urls_credentials(
    vault_env: dict[str, str],
    lfs_repo: tuple[ServedRepo, dict[str, bytes]],  # noqa: F811
    empty_target,
    token_server,
    capsys: pytest.CaptureFixture,
) -> None:
    repo, contents = lfs_repo
    archive(repo)
    shutil.rmtree(repo.lfs_store())  # the forge lost them: the vault's copies are pushed
    bare, url = empty_target("weights")
    target, _, log = through(token_server, url)
    code, out, err = run(["restore", repo.url, "--push", target], capsys)
    assert code == 0, err
    assert "4 LFS objects" in out
    for oid, data in contents.items():
        assert local_path(bare, oid).read_bytes() == data
    puts = [r for r in logged_requests(log) if r.method == "PUT" and "/weights.git/" in r.path]
    assert len(puts) == 4 and all(r.authorization for r in puts)


def test_the_wiki_is_pushed_beside_the_repository(
    vault_env: dict[str, str],
    with_wiki: tuple[ServedRepo, ServedRepo],  # noqa: F811
    empty_target,
    capsys: pytest.CaptureFixture,
) -> None:
    repo, wiki = with_wiki
    archive(repo)
    owner = f"target{uuid.uuid4().hex[:8]}"
    _, url = empty_target("handbook", owner)
    code, _, err = run(["restore", repo.url, "--push", url, "--wiki"], capsys)
    assert code != 0 and "save one page" in err  # no wiki repository yet: said, nothing pushed
    assert remote_refs(url) == {}
    _, wiki_url = empty_target("handbook.wiki", owner)
    code, out, err = run(["restore", repo.url, "--push", url, "--wiki"], capsys)
    assert code == 0, err
    assert remote_refs(url) == repo.refs() and remote_refs(wiki_url) == wiki.refs()
    assert "pushed its wiki snapshot" in out and wiki_url in out


def test_a_target_that_is_not_empty_is_refused_then_overwritten_with_force(
    vault_env: dict[str, str],
    branched_repo: ServedRepo,
    make_repo: Callable[..., ServedRepo],
    capsys: pytest.CaptureFixture,
) -> None:
    archive(branched_repo)
    other = make_repo("occupied")
    other.commit({"x.txt": "x\n"})
    other.branch("dev")
    other.tag("v0")
    other.checkout("main")
    other.push()
    before = other.refs()
    code, out, err = run(["restore", branched_repo.url, "--push", other.url], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "has 2 branches and 1 tags (dev, main, v0); pass --force to overwrite them" in err
    assert other.refs() == before

    code, out, err = run(["restore", branched_repo.url, "--push", other.url, "--force"], capsys)
    assert code == 0, err
    assert other.refs() == branched_repo.refs()  # dev and v0 deleted, main overwritten
    assert "2 other refs deleted" in out


def test_the_source_itself_is_refused(
    vault_env: dict[str, str], branched_repo: ServedRepo, capsys: pytest.CaptureFixture
) -> None:
    archive(branched_repo)
    branched_repo.commit({"new.txt": "after the snapshot\n"})
    branched_repo.push()
    before = branched_repo.refs()
    code, _, err = run(["restore", branched_repo.repo_id, "--push", branched_repo.url], capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"is {branched_repo.repo_id} itself" in err and "--force" in err
    assert branched_repo.refs() == before


def test_a_target_that_does_not_exist_says_to_create_it(
    vault_env: dict[str, str], branched_repo: ServedRepo, git_base_url: str, capsys
) -> None:
    archive(branched_repo)
    missing = f"{git_base_url}/nobody{uuid.uuid4().hex[:8]}/gone.git"
    code, out, err = run(["restore", branched_repo.url, "--push", missing], capsys)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"the push target {missing}" in err and "create it first" in err


def test_bad_combinations_are_one_line(
    vault_env: dict[str, str], branched_repo: ServedRepo, tmp_path: Path, capsys
) -> None:
    archive(branched_repo)
    for args, said in [
        (["--push", "http://127.0.0.1:1/o/r.git", "--metadata"], "restored as files"),
        (["--push", "file:///tmp/x.git"], "push URL: local paths"),
        (["--push", "https://evil.example/o/r.git"], "not allowed"),
        (["--create", "sourcehut:o/r"], "give github:ORG/NAME"),
        ([str(tmp_path / "d"), "--force"], "--force is for --push"),
        ([], "give DEST"),
    ]:
        code, _, err = run(["restore", branched_repo.url, *args], capsys)
        assert code == 2 and err.count("\n") == 1 and said in err, (args, err)


@pytest.fixture
def forge(
    git_base_url: str, served_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ForgeApi]:
    with forge_api(git_base_url, token=TOKEN, served_root=served_root) as api:
        monkeypatch.setenv("REPOVAULT_GITHUB_API", api.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("REPOVAULT_GITLAB_API", f"{api.url}/api/v4")
        monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
        monkeypatch.setenv("REPOVAULT_GITEA_API", f"{api.url}/api/v1")
        monkeypatch.setenv("GITEA_TOKEN", TOKEN)
        monkeypatch.setenv("REPOVAULT_BITBUCKET_API", f"{api.url}/2.0")
        monkeypatch.setenv("BITBUCKET_USERNAME", api.username)
        monkeypatch.setenv("BITBUCKET_APP_PASSWORD", TOKEN)
        yield api


@pytest.mark.parametrize(
    "spec, path",
    [
        ("github:restorer/rebuilt", "/user/repos"),  # the token's own user
        ("github:acme/rebuilt", "/orgs/acme/repos"),
        ("gitlab:acme/team/rebuilt", "/api/v4/projects"),
        ("gitea:acme/rebuilt", "/api/v1/orgs/acme/repos"),
        ("gitea:restorer/rebuilt", "/api/v1/user/repos"),
        ("bitbucket:acme/rebuilt", "/2.0/repositories/acme/{name}"),
    ],
)
def test_create_makes_a_private_repository_through_the_api_and_pushes_into_it(
    vault_env: dict[str, str],
    branched_repo: ServedRepo,
    forge: ForgeApi,
    git_server_log: Path,
    git_base_url: str,
    spec: str,
    path: str,
    capsys: pytest.CaptureFixture,
) -> None:
    archive(branched_repo)
    spec = f"{spec}{uuid.uuid4().hex[:6]}"
    full_name = spec.split(":", 1)[1]
    code, out, err = run(["restore", branched_repo.url, "--create", spec], capsys)
    assert code == 0, err
    assert f"created {full_name} (private)" in out
    assert remote_refs(f"{git_base_url}/{full_name}.git") == branched_repo.refs()
    [created] = forge.created
    assert True in (created.get("private"), created.get("is_private")) or created.get(
        "visibility"
    ) == ("private")
    posts = [h for p, h in forge.requests if p == path.format(name=full_name.rsplit("/")[-1])]
    assert len(posts) == 1
    # The token went to the API only: the git server (another origin) never saw it.
    assert all(
        r.authorization is None for r in logged_requests(git_server_log, f"/{full_name}.git")
    )

    code, out, err = run(["restore", branched_repo.url, "--create", spec], capsys)
    assert code == 1 and err.count("\n") == 1 and f"{full_name} already exists" in err


def test_the_console_script_pushes_from_any_folder_and_never_prints_the_credential(
    vault_env: dict[str, str],
    branched_repo: ServedRepo,
    empty_target,
    token_server,
    tmp_path: Path,
) -> None:
    archive(branched_repo)
    _, url = empty_target()
    secured, shown, _ = through(token_server, url)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = repovault(["restore", branched_repo.repo_id, "--push", secured], elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"to {shown}: 2 branches, 1 tags" in done.stdout
    assert remote_refs(url) == branched_repo.refs()
    again = repovault(["restore", branched_repo.repo_id, "--push", secured], elsewhere)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "is not empty: it has 2 branches and 1 tags (feature, main, v1)" in again.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written where it ran
    for text in (done.stdout, done.stderr, again.stdout, again.stderr):
        assert TOKEN not in text


def test_the_push_urls_credentials_leave_the_url_and_are_never_shown(vault_env) -> None:
    settings = Settings.from_env()
    target = push_target(f"http://restorer:{TOKEN}%40x@127.0.0.1:8/o/r.git", settings)
    assert target.ref.url == "http://127.0.0.1:8/o/r.git"
    assert target.ref.repo_id == "127.0.0.1:8/o/r"
    assert target.auth is not None and target.auth.password == f"{TOKEN}@x"
    assert TOKEN not in repr(target)
    assert push_target("http://127.0.0.1:8/o/r.git", settings).auth is None
    with pytest.raises(InvalidTarget, match="not allowed"):
        push_target(f"https://u:{TOKEN}@elsewhere.example/o/r.git", settings)
