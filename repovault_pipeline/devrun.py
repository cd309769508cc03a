"""`make run` and `make stop`: the embedded default as one foreground process that stops cleanly.

`run` starts the embedded broker (or says which broker it reuses), runs `repovault init`, then
`dagster dev` in a process group of its own. Ctrl-C, SIGTERM or SIGHUP, or dagster dev ending,
stops dagster dev and everything it started (webserver, daemon, code servers, run workers) and
the broker this run started. `--stop` stops, from another terminal, what this REPOVAULT_HOME
recorded (`devprocess`), and nothing else.

    python -m repovault_pipeline.devrun [-- COMMAND...]   (default: dagster dev -w workspace.yaml)
    python -m repovault_pipeline.devrun --stop
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from . import devbroker, devprocess
from .core.common.settings import ConfigError, Settings

SUPERVISOR = "make-run"
DAGSTER = "dagster"
DEFAULT_COMMAND = ["dagster", "dev", "-w", "workspace.yaml"]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(Exception):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def run(settings: Settings, command: list[str]) -> int:
    """Supervise the embedded default until a stop signal or `command` ends; exit 0 on a
    requested stop, else `command`'s exit code."""
    home = settings.home
    if (running := devprocess.recorded(home, SUPERVISOR)) is not None:
        raise SystemExit(
            f"`make run` of REPOVAULT_HOME {home} already runs (pid {running.pid}); "
            "stop it with `make stop`"
        )
    devprocess.record(home, SUPERVISOR, os.getpid())
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    started: list[devprocess.RecordedProcess] = []
    try:
        broker, line = devbroker.ensure(home, settings.kafka_bootstrap)
        print(line, flush=True)
        started += [broker] if broker else []
        init = subprocess.run([sys.executable, "-m", "repovault_pipeline.cli", "init"])
        if init.returncode:
            return init.returncode
        child = subprocess.Popen(command, start_new_session=True)
        started.append(devprocess.record(home, DAGSTER, child.pid, " ".join(command)))
        # One write, newline included: the child writes to the same stdout meanwhile, and an
        # unbuffered print writes the text and its newline apart, which the child's line could
        # land between.
        sys.stdout.write(
            f"{' '.join(command)}: pid {child.pid}; Ctrl-C or `make stop` stops everything\n"
        )
        sys.stdout.flush()
        code = child.wait()
        print(f"{command[0]} exited with {code}; stopping", flush=True)
        return code
    except Stop as stop:
        print(f"{stop}: stopping", flush=True)
        return 0
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # the stop below runs to its end
        stopped = devprocess.stop(started)
        for name in (DAGSTER, devbroker.BROKER, SUPERVISOR):
            if name == SUPERVISOR or any(p.name == name for p in started):
                devprocess.forget(home, name)
        print(f"stopped {len(stopped)} processes", flush=True)


def stop_home(home: Path) -> int:
    """Stop the `make run` of `home` and what it recorded; what other homes run stays."""
    supervisor = devprocess.recorded(home, SUPERVISOR)
    if supervisor is not None:
        os.kill(supervisor.pid, signal.SIGTERM)  # it stops its children itself
        deadline = time.monotonic() + devprocess.STOP_GRACE_S + 10
        while supervisor.alive and time.monotonic() < deadline:
            time.sleep(0.1)
    left = [p for n in (DAGSTER, devbroker.BROKER) if (p := devprocess.recorded(home, n))]
    stopped = devprocess.stop(left)
    for proc in left:
        devprocess.forget(home, proc.name)
    what = [f"make run (pid {supervisor.pid})"] if supervisor else []
    what += [f"{p.name} (pid {p.pid})" for p in left]
    print(
        f"stopped {', '.join(what)} of REPOVAULT_HOME {home} ({len(stopped)} processes)"
        if what
        else f"nothing of REPOVAULT_HOME {home} runs"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stop", action="store_true", help="stop this home's `make run`")
    parser.add_argument("command", nargs="*", help=f"default: {' '.join(DEFAULT_COMMAND)}")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    if args.stop:
        return stop_home(settings.home)
    return run(settings, args.command or DEFAULT_COMMAND)


if __name__ == "__main__":
    sys.exit(main())
