"""`make run` and `make stop` (repovault_pipeline/devrun.py) as an operator uses them: SIGTERM
stops every process the run started, `make stop` stops this home's processes and no other's,
and the run says which broker it uses. A shell tree stands in for `dagster dev` (a real one takes
a minute of CPU to start); the broker and `repovault init` are the real ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from repovault_pipeline import devprocess
from tests.support.servers import free_port, port_open

# dagster dev's shape: children in its process group, one that left it for a session of its own.
DAGSTER_STANDIN = "sleep 300 & sleep 300 & setsid sleep 300 & echo standin-ready; wait"


def home_env(home: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("REPOVAULT_") and k != "DAGSTER_HOME"
    }
    return {**env, "REPOVAULT_HOME": str(home), "REPOVAULT_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}


def python(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def start_run(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`make run`'s command with the stand-in, once everything is up; returns it and its output
    so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "repovault_pipeline.devrun", "--", "sh", "-c", DAGSTER_STANDIN],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "standin-ready\n":
        line = proc.stdout.readline()
        assert line, f"make run ended early: {lines}"
        lines.append(line)
    return proc, lines


def recorded_soon(home: Path, name: str) -> devprocess.RecordedProcess | None:
    """The record `make run` writes right after starting `name` (whose output can come first)."""
    deadline = time.monotonic() + 30
    while (found := devprocess.recorded(home, name)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def still_running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if devprocess.running(pid)]


def test_sigterm_stops_every_process_make_run_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = home_env(home, free_port())
    proc, lines = start_run(env, tmp_path)
    assert "started the embedded Kafka-protocol broker (Tansu) on 127.0.0.1:" in lines[0], lines
    assert any(line.startswith(f"RepoVault home (REPOVAULT_HOME): {home}") for line in lines)
    broker = devprocess.recorded(home, "broker")
    dagster = recorded_soon(home, "dagster")  # written just after the child started printing
    assert broker is not None and dagster is not None
    tree = [proc.pid, *devprocess.descendants(proc.pid)]
    assert broker.pid in tree and dagster.pid in tree
    assert len(tree) == 6  # devrun, broker, sh and its three sleeps

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert still_running(tree) == []
    assert proc.stdout is not None and "SIGTERM: stopping" in proc.stdout.read()
    assert list((home / "run").iterdir()) == []


def test_make_stop_stops_this_homes_processes_and_no_other(tmp_path: Path) -> None:
    """Two checkouts on one machine, each with its broker: `make stop` in one leaves the other's
    broker running; a run reusing another checkout's broker says so."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    my_port, other_port = free_port(), free_port()
    started = python(
        "-m", "repovault_pipeline.devbroker", env=home_env(other, other_port), cwd=tmp_path
    )
    assert started.returncode == 0 and "started the embedded" in started.stdout, started
    other_broker = devprocess.recorded(other, "broker")
    assert other_broker is not None

    reused = python(
        "-m", "repovault_pipeline.devbroker", env=home_env(mine, other_port), cwd=tmp_path
    )
    assert (
        f"reusing the broker already listening on 127.0.0.1:{other_port} (not started from "
        f"REPOVAULT_HOME {mine}" in reused.stdout
    ), reused
    assert devprocess.recorded(mine, "broker") is None

    proc, _ = start_run(home_env(mine, my_port), tmp_path)
    tree = [proc.pid, *devprocess.descendants(proc.pid)]
    stopped = python(
        "-m", "repovault_pipeline.devrun", "--stop", env=home_env(mine, my_port), cwd=tmp_path
    )
    assert stopped.returncode == 0 and f"of REPOVAULT_HOME {mine}" in stopped.stdout, stopped
    assert proc.wait(timeout=60) == 0
    assert still_running(tree) == [] and not port_open("127.0.0.1", my_port)
    assert other_broker.alive and port_open("127.0.0.1", other_port)

    python(
        "-m", "repovault_pipeline.devrun", "--stop", env=home_env(other, other_port), cwd=tmp_path
    )
    assert not other_broker.alive
    again = python(
        "-m", "repovault_pipeline.devrun", "--stop", env=home_env(other, other_port), cwd=tmp_path
    )
    assert f"nothing of REPOVAULT_HOME {other} runs" in again.stdout
