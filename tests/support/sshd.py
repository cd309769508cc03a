"""A real OpenSSH server on loopback serving git repositories, for the `ssh://` clone path.

Everything is its own: host key, config, port, authorized key, log. The one authorized key may
only run `git-upload-pack` on repositories under `root` (a forced command), so a clone of
`ssh://USER@127.0.0.1:PORT/owner/name.git` reads `root/owner/name.git`. Runs as the current user;
as root (CI), OpenSSH needs its privilege separation directory, which is created if missing.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import start_listening, stop

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by absolute path


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    host_public_key: str
    commands_log: Path  # one line per command a client ran: what the server was asked for

    @property
    def base_url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def commands(self) -> list[str]:
        return self.commands_log.read_text().splitlines() if self.commands_log.exists() else []


def make_key(path: Path) -> Path:
    """A new passphrase-less ed25519 key pair at `path` and `path`.pub, readable by us only."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "repovault-test", "-f", str(path)],
        check=True,
    )
    return path


def available() -> str | None:
    """Why an sshd cannot run here, or None."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        return "OpenSSH server is not installed (Debian: openssh-server; .ci/run installs it)"
    return None


@contextmanager
def ssh_git_server(root: Path, work: Path, authorized_key: Path) -> Iterator[SshServer]:
    """Serve the repositories under `root` to the holder of `authorized_key` until the block
    ends; `work` holds the server's own files."""
    work.mkdir(parents=True, exist_ok=True)
    host_key = make_key(work / "host_ed25519")
    commands_log = work / "commands.log"
    wrapper = work / "git-upload-pack-only"
    wrapper.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            # Forced command: only git-upload-pack of a repository under the served root.
            printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> '{commands_log}'
            case "$SSH_ORIGINAL_COMMAND" in
              *..*) echo "fatal: no such repository" >&2; exit 128 ;;
              "git-upload-pack '/"*"'") ;;
              *) echo "fatal: only git-upload-pack is served here" >&2; exit 128 ;;
            esac
            path=${{SSH_ORIGINAL_COMMAND#"git-upload-pack '/"}}
            exec git-upload-pack -- '{root}'/"${{path%"'"}}"
            """
        )
    )
    wrapper.chmod(0o755)
    public = authorized_key.with_name(authorized_key.name + ".pub").read_text().strip()
    options = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty"
    (work / "authorized_keys").write_text(f'command="{wrapper}",{options} {public}\n')
    user = getpass.getuser()
    config = work / "sshd_config"
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def start(port: int) -> subprocess.Popen:
        config.write_text(
            textwrap.dedent(
                f"""\
                Port {port}
                ListenAddress 127.0.0.1
                HostKey {host_key}
                PidFile {work / "sshd.pid"}
                AuthorizedKeysFile {work / "authorized_keys"}
                AllowUsers {user}
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitRootLogin prohibit-password
                UsePAM no
                StrictModes no
                PermitUserEnvironment no
                AllowTcpForwarding no
                X11Forwarding no
                LogLevel VERBOSE
                """
            )
        )
        with (work / "sshd.log").open("ab") as log:
            return subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    proc, port = start_listening(start)
    try:
        host_public = host_key.with_name(host_key.name + ".pub").read_text().split()[:2]
        yield SshServer(port, user, " ".join(host_public), commands_log)
    finally:
        stop(proc)
