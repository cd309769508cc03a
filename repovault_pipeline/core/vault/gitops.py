"""Git, hardened: clone untrusted remotes, bundle them and read HEAD's files from git objects.

Every command is a `git` process of its own (`_start`) with an environment that disables hooks,
system and global config, credential helpers, prompts and every transport but the allowed
schemes, and with `--` before any URL. Credentials travel in the environment (`GIT_CONFIG_*`),
never on a command line, in a config file or in a message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from repovault_pipeline.core.common.errors import (
    ArchiveError,
    GitTimeout,
    RepoTooLarge,
    WorkDirFull,
)
from repovault_pipeline.core.common.identity import RepoRef, web_origin
from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.vault.gitproc import (
    MB,
    StderrTail,
    classify,
    disk_full,
    drain,
    existing,
    exit_waiter,
    feed,
    free_bytes,
    kill_group,
    mb,
    received_bytes,
    start,
    tree_size,
)
from repovault_pipeline.core.vault.localrepo import LocalRepo

log = logging.getLogger(__name__)
BITBUCKET_TOKEN_USER = "x-bitbucket-api-token-auth"  # git's user for an Atlassian API token


def _ssh_option(name: str, path: Path) -> str:
    """`Name=path` as ssh parses it: `%` expands tokens, whitespace splits unless quoted."""
    value = str(path).replace("%", "%%")
    return f'{name}="{value}"' if any(c.isspace() for c in value) else f"{name}={value}"


@dataclass(frozen=True)
class RemoteState:
    """What the remote advertises: branch and tag refs, the branch HEAD points at, and the
    commit HEAD names (None: HEAD names no commit)."""

    refs: dict[str, str]
    default_branch: str | None
    head: str | None = None


@dataclass(frozen=True)
class BasicAuth:
    """Credentials a person gave for one web origin (a push target's `https://user:pass@`):
    sent like the tokens, in the environment, to that origin only."""

    origin: tuple[str, str, int | None]  # scheme, host, port (None: the scheme's default)
    user: str
    password: str

    def __repr__(self) -> str:
        return f"BasicAuth(origin={self.origin!r}, user=***, password=***)"

    def header(self) -> str:
        return base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


class GitClient:
    """Runs git for one repository reference with the hardened environment of `settings`
    (and `auth`, credentials of one origin, when given)."""

    def __init__(
        self,
        settings: Settings,
        logger: logging.Logger | None = None,
        auth: BasicAuth | None = None,
    ) -> None:
        self.settings = settings
        self.log = logger or log
        self.auth = auth

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """What git's messages are masked of: the tokens, and `auth`'s credentials."""
        auth = self.auth
        given = (auth.password or auth.user, auth.header()) if auth else ()
        settings = self.settings
        tokens = (settings.github_token, settings.gitlab_token, settings.gitea_token)
        return (*tokens, settings.bitbucket_app_password, *given)

    def environment(
        self, ref: RepoRef | None = None, protocols: tuple[str, ...] | None = None
    ) -> dict[str, str]:
        """Environment of every git command; `protocols` overrides the allowed transports."""
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ALLOW_PROTOCOL": ":".join(protocols or self.settings.allowed_schemes),
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_CONFIG_COUNT": "0",
            "LC_ALL": "C",
        }
        env["GIT_SSH_COMMAND"] = self._ssh_command()
        credentials = self._credentials(ref)
        if credentials is not None:
            (scheme, host, port), basic = credentials
            # git sends its extra header to wherever a redirect led, on every later request of
            # the command: with a credential attached, redirects are not followed at all.
            env.update(
                GIT_CONFIG_COUNT="2",
                GIT_CONFIG_KEY_0=f"http.{scheme}://{host}{f':{port}' if port else ''}/.extraheader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
                GIT_CONFIG_KEY_1="http.followRedirects",
                GIT_CONFIG_VALUE_1="false",
            )
        return env

    def _credentials(self, ref: RepoRef | None) -> tuple[tuple[str, str, int | None], str] | None:
        """The web origin `ref` is on and the basic credentials git sends there: GITHUB_TOKEN
        only to the web host of REPOVAULT_GITHUB_API, GITLAB_TOKEN only to that of
        REPOVAULT_GITLAB_API (GitLab's `oauth2` user), GITEA_TOKEN only to that of
        REPOVAULT_GITEA_API (Gitea takes a token as the password of any user name),
        BITBUCKET_USERNAME's app password only to that of REPOVAULT_BITBUCKET_API (an Atlassian
        API token, given with the account's email as the user name, goes as Bitbucket's fixed
        git user for tokens); `auth` only to its origin, before them; nothing for any other host."""
        if ref is None:
            return None
        if self.auth is not None and (ref.scheme, ref.host, ref.port) == self.auth.origin:
            return self.auth.origin, self.auth.header()
        settings = self.settings
        for token, api, user in (
            (settings.github_token, settings.github_api, "x-access-token"),
            (settings.gitlab_token, settings.gitlab_api, "oauth2"),
            (settings.gitea_token, settings.gitea_api, "oauth2"),
            (settings.bitbucket_app_password, settings.bitbucket_api, _bitbucket_user(settings)),
        ):
            web = web_origin(api)
            if token and user and (ref.scheme, ref.host, ref.port) == web:
                return web, base64.b64encode(f"{user}:{token}".encode()).decode()
        return None

    def _ssh_command(self) -> str:
        """ssh reads no config file (`-F /dev/null`: not the user's ~/.ssh/config), never
        prompts, and remembers host keys in `REPOVAULT_SSH_KNOWN_HOSTS`, never ~/.ssh: new hosts
        are added on first use, a changed key is refused."""
        known_hosts = self.settings.ssh_known_hosts.absolute()
        with suppress(OSError):  # read-only (keys pinned by the operator): ssh only reads it
            known_hosts.parent.mkdir(parents=True, exist_ok=True)
        ssh = ["ssh", "-F", os.devnull, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        ssh += ["-o", "StrictHostKeyChecking=accept-new", "-o", "UpdateHostKeys=no"]
        ssh += ["-o", _ssh_option("UserKnownHostsFile", known_hosts)]
        if self.settings.ssh_key:
            ssh += [
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                _ssh_option("IdentityFile", self.settings.ssh_key.absolute()),
            ]
        return shlex.join(ssh)

    def ls_remote(self, ref: RepoRef) -> RemoteState:
        """The remote's refs without cloning: the cheap check behind the `unchanged` outcome."""
        out = self.run(["ls-remote", "--symref", "--", ref.url], ref=ref)
        refs: dict[str, str] = {}
        default_branch = head = None
        for line in out.decode(errors="replace").splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: ") and name == "HEAD":
                default_branch = left[len("ref: ") :].removeprefix("refs/heads/")
            elif name == "HEAD":
                head = left
            elif _is_archived_ref(name):
                refs[name] = left
        return RemoteState(refs=refs, default_branch=default_branch, head=head)

    def clone(self, ref: RepoRef, dest: Path) -> LocalRepo:
        """Bare clone of every branch and tag, aborted past the size cap or the timeout."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.log.info("cloning %s", ref.url)
        self.run(
            ["clone", "--bare", "--template=", "--progress", "--", ref.url, str(dest)],
            ref=ref,
            watch=dest,
        )
        return LocalRepo(dest, self)

    def run(
        self,
        args: list[str],
        ref: RepoRef | None = None,
        cwd: Path | None = None,
        watch: Path | None = None,
        protocols: tuple[str, ...] | None = None,
        stdin: bytes | None = None,
    ) -> bytes:
        """Run git (fed `stdin`) and classify a failure; kill it past the timeout or when
        `watch` outgrows the size cap."""
        code, stdout, stderr = self.run_status(args, ref, cwd, watch, protocols, stdin)
        if code != 0:
            raise classify(args[0], stderr, self.secrets)
        return stdout

    def run_status(
        self,
        args: list[str],
        ref: RepoRef | None = None,
        cwd: Path | None = None,
        watch: Path | None = None,
        protocols: tuple[str, ...] | None = None,
        stdin: bytes | None = None,
        stderr_keep: int = 16384,
    ) -> tuple[int, bytes, str]:
        """`run`, returning git's exit status, stdout and the last `stderr_keep` bytes of its
        stderr instead of raising for a non-zero status (for commands whose output says more
        than their status); the timeout, the size cap and a full disk still raise."""
        free_before = free_bytes(watch or cwd)
        popen = start(
            args, cwd, self.environment(ref, protocols), stdin is not None, new_session=True
        )
        if stdin is not None:
            threading.Thread(target=feed, args=(popen.stdin, [stdin]), daemon=True).start()
        stdout, stderr = bytearray(), StderrTail(self.log if watch else None, stderr_keep)
        readers = [
            threading.Thread(target=drain, args=(popen.stdout, stdout.extend), daemon=True),
            threading.Thread(target=drain, args=(popen.stderr, stderr.feed), daemon=True),
        ]
        for reader in readers:
            reader.start()
        failure, received = self._watch(popen, args[0], watch)
        popen.wait()
        for reader in readers:
            reader.join(timeout=5)
        if failure:
            raise failure
        cap = self.settings.max_repo_mb * MB
        if watch is not None and (size := tree_size(watch)) > cap:
            raise RepoTooLarge(
                f"repository is {size // (1024 * 1024)} MB, larger than "
                f"REPOVAULT_MAX_REPO_MB={self.settings.max_repo_mb}"
            )
        if popen.returncode != 0 and disk_full(stderr.text()):
            received = max(received, received_bytes(stderr.text()))
            raise self.work_dir_full(args[0], watch or cwd, free_before, received)
        return popen.returncode, bytes(stdout), stderr.text()

    def _watch(
        self, popen: subprocess.Popen[bytes], command: str, watch: Path | None
    ) -> tuple[ArchiveError | None, int]:
        """Wait for git; kill it (and its helpers) past REPOVAULT_GIT_TIMEOUT_S or once `watch`
        outgrows REPOVAULT_MAX_REPO_MB. Returns why it was killed, and the most `watch` held
        (git deletes a clone that failed)."""
        cap = self.settings.max_repo_mb * MB
        deadline = time.monotonic() + self.settings.git_timeout_s
        failure: ArchiveError | None = None
        received = 0
        with exit_waiter(popen) as exited:
            while not exited(0.2):
                if time.monotonic() > deadline:
                    failure = GitTimeout(
                        f"git {command} ran past REPOVAULT_GIT_TIMEOUT_S="
                        f"{self.settings.git_timeout_s}s and was aborted"
                    )
                elif watch is not None and (received := max(received, tree_size(watch))) > cap:
                    failure = RepoTooLarge(
                        f"repository is larger than REPOVAULT_MAX_REPO_MB="
                        f"{self.settings.max_repo_mb} ({received // MB} MB received so far); "
                        "clone aborted"
                    )
                if failure:
                    kill_group(popen)
                    break
        return failure, received

    def work_dir_full(
        self, command: str, folder: Path | None, free_before: int | None, received: int = 0
    ) -> WorkDirFull:
        """The error for a git command that ran out of disk writing into `folder`: which folder
        (the work folder, by its variable, when it is under it), what is free there now, and
        what the repository needed: more than was free when the command started (git deletes a
        failed clone, so its size is gone), and what the clone had received, when known."""
        work_dir = self.settings.work_dir.absolute()
        folder = (folder or work_dir).absolute()
        if folder.is_relative_to(work_dir):
            where = f"the work folder REPOVAULT_WORK_DIR={work_dir} is full"
            todo = "free space there or point REPOVAULT_WORK_DIR at a larger disk, then retry"
        else:
            where = f"the disk holding {folder} is full"
            todo = "free space there or choose a folder on a larger disk, then retry"
        found = existing(folder)
        if found is not None:
            usage = shutil.disk_usage(found)
            where += f" ({mb(usage.free)} free of {mb(usage.total)})"
        needs = []
        if free_before is not None:
            needs.append(f"more than the {mb(free_before)} free when git {command} started")
        if received:
            needs.append(f"{mb(received)} received before the disk filled")
        need = f"; the repository needs {', '.join(needs)}" if needs else ""
        return WorkDirFull(f"git {command}: no space left on device: {where}{need}; {todo}")


def refs_digest(refs: dict[str, str]) -> str:
    """sha256 of the sorted `sha name` lines: equal digests, equal branches and tags. What
    `repo_state` keeps of a snapshot's refs, so a refresh compares without reading manifests."""
    lines = "".join(f"{sha} {name}\n" for name, sha in sorted(refs.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _is_archived_ref(name: str) -> bool:
    return name.startswith(("refs/heads/", "refs/tags/")) and not name.endswith("^{}")


def _bitbucket_user(settings: Settings) -> str | None:
    """Git's user for Bitbucket's secret: BITBUCKET_USERNAME with an app password; with an
    Atlassian API token the API takes the account's email, git a fixed user instead."""
    username = settings.bitbucket_username
    return BITBUCKET_TOKEN_USER if username and "@" in username else username
