"""Static checks of the full stack: docker-compose.yml, docker-compose.ha.yml, Dockerfile,
.env.example and the Keycloak realm.

No Docker engine runs on the test machines. The checks read the configuration Compose would run,
resolved by `tests/support/compose.py` (interpolation, anchors and merge keys, `extends`, the HA
override), so they run on every machine; where Debian's `docker-compose` is installed (CI
installs it; it works offline) `config -q` validates both files and its resolved configuration
is compared with ours. Each check runs with .env.example and with a second env file whose every
value differs, so that a value hard-coded in one place cannot agree with another place by
coincidence.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from repovault_pipeline.core.access.oidc import ROLE_SCOPES
from repovault_pipeline.core.access.tokens import SCOPES
from repovault_pipeline.core.common.settings import Settings
from tests.conftest import missing_service
from tests.support.compose import ComposeError, load_project, read_env_file

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "repovault_pipeline"
BASE = "docker-compose.yml"
HA = "docker-compose.ha.yml"
ENV_EXAMPLE = ROOT / ".env.example"
REALM_FILE = ROOT / "deploy" / "keycloak" / "repovault-realm.json"
IMPORT_DIR = "/opt/keycloak/data/import"

# Read on the code's behalf by a library, so no scan of our sources can find them: boto3 takes
# the S3 credentials from the environment. (DAGSTER_HOME: see the Dagster check.)
LIBRARY_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# Empty means "use the default" for every setting except these, which a deployment must fill.
MUST_BE_FILLED = {
    "REPOVAULT_KAFKA_BOOTSTRAP",
    "REPOVAULT_S3_ENDPOINT",
    "REPOVAULT_DB_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN")
SPEC_TOPICS = ("pendientes", "en_proceso", "completados", "rechazados")
# Where each service that keeps data keeps it.
DATA_DIRS = {
    "postgres": "/var/lib/postgresql/data",
    "keycloak-db": "/var/lib/postgresql/data",
    "minio": "/data",
    "kafka": "/var/lib/kafka/data",
    "kafka-2": "/var/lib/kafka/data",
    "kafka-3": "/var/lib/kafka/data",
    "dagster-code": "/opt/dagster/home/storage",
    "dagster-daemon": "/opt/dagster/home/storage",
    "dagster-webserver": "/opt/dagster/home/storage",
    "dagster-viewer": "/opt/dagster/home/storage",
}


# --- running Compose --------------------------------------------------------------------------


def compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        missing_service("docker-compose is not installed (.ci/run installs Debian's package)")
    return binary


def has_compose() -> bool:
    return shutil.which("docker-compose") is not None


def load(files: Iterable[str], env_file: Path) -> dict[str, Any]:
    """The configuration Compose would run for `files` and `env_file`, nothing else exported."""
    return load_project([ROOT / name for name in files], read_env_file(env_file), ROOT)


def run_compose(files: Iterable[str], env_file: Path, *args: str) -> subprocess.CompletedProcess:
    """`docker-compose config` with nothing from this process's environment: interpolation sees
    only `env_file`, as on a host where the operator exported nothing."""
    cmd = [compose_binary(), "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for name in files:
        cmd += ["-f", str(ROOT / name)]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(env_file.parent),
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(
        [*cmd, "config", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


parse_env_file = read_env_file


def other_env_values() -> dict[str, str]:
    """Every value of .env.example changed: other host, ports, names, sizes and secrets."""
    changed = {
        "COMPOSE_PROJECT_NAME": "vaulttest",
        "REPOVAULT_PUBLIC_HOST": "vault.example.test",
        "REPOVAULT_BIND_ADDRESS": "0.0.0.0",
        "REPOVAULT_UI_PORT": "14180",
        "REPOVAULT_VIEWER_UI_PORT": "14181",
        "KEYCLOAK_PORT": "18080",
        "MINIO_API_PORT": "19000",
        "MINIO_CONSOLE_PORT": "19001",
        "REPOVAULT_OPERATOR_USERNAME": "alice",
        "REPOVAULT_OPERATOR_EMAIL": "alice@example.test",
        "KEYCLOAK_GITHUB_CLIENT_ID": "Ov23liTestClientId42",
        "KEYCLOAK_GITHUB_CLIENT_SECRET": "0123456789abcdef0123456789abcdef01234567",
        "OAUTH2_PROXY_COOKIE_SECURE": "true",
        "KEYCLOAK_ADMIN_USER": "kcroot",
        "POSTGRES_USER": "pgowner",
        "MINIO_ROOT_USER": "vaultminio",
        "REPOVAULT_S3_ACCESS_KEY": "vault-writer",
        "AWS_REGION": "eu-west-3",
        "REPOVAULT_TOPIC_PARTITIONS": "7",
        "REPOVAULT_INJECTOR_BATCH": "50",
        "REPOVAULT_BUCKET_PREFIX": "vault-",
        "REPOVAULT_ALLOWED_HOSTS": "github.com,gitlab.com",
        "REPOVAULT_ALLOWED_SCHEMES": "https",
        "REPOVAULT_MAX_REPO_MB": "512",
        "REPOVAULT_GIT_TIMEOUT_S": "600",
        "REPOVAULT_KEEP_SNAPSHOTS": "3",
        "REPOVAULT_TRENDING_LANGUAGE": "python",
        "REPOVAULT_TRENDING_SINCE": "weekly",
        "REPOVAULT_UPLOAD_WORKERS": "4",
        "REPOVAULT_GITHUB_TOKEN": "ghp_" + "T" * 36,
        "REPOVAULT_SSH_KEY": "/run/secrets/repovault_ssh_key",
    }
    values = {}
    for key, value in parse_env_file(ENV_EXAMPLE).items():
        if value.startswith("change-me"):
            # 32 letters and digits: also a valid oauth2-proxy cookie secret.
            value = hashlib.sha256(key.encode()).hexdigest()[:32]
        values[key] = changed.get(key, value)
    return values


ENV_FILES = ("example", "other")


@pytest.fixture(scope="module")
def env_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    other = tmp_path_factory.mktemp("env") / "other.env"
    other.write_text("".join(f"{k}={v}\n" for k, v in other_env_values().items()))
    return {"example": ENV_EXAMPLE, "other": other}


_configs: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}


def load_config(files: tuple[str, ...], env_file: Path) -> dict[str, Any]:
    key = (files, str(env_file))
    if key not in _configs:
        try:
            _configs[key] = load(files, env_file)
        except ComposeError as exc:
            pytest.fail(f"Compose would refuse {'+'.join(files)}: {exc}")
    return _configs[key]


class Stack:
    """One resolved configuration and the env file behind it."""

    def __init__(self, files: tuple[str, ...], env_name: str, env_file: Path) -> None:
        self.files = files
        self.ha = HA in files
        self.env_name = env_name
        self.dotenv = parse_env_file(env_file)
        self.config = load_config(files, env_file)
        self.services: dict[str, dict[str, Any]] = self.config["services"]

    def __repr__(self) -> str:
        return f"Stack({'+'.join(self.files)}, {self.env_name})"

    def env(self, name: str) -> dict[str, str]:
        raw = self.services[name].get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.partition("=")[::2] for item in raw)
        return {k: "" if v is None else str(v) for k, v in raw.items()}

    def command(self, name: str) -> list[str]:
        command = self.services[name].get("command")
        if command is None and "build" in self.services[name]:
            command = dockerfile_cmd()
        if isinstance(command, str):
            command = command.split()
        return list(command or [])

    def one_shot(self, name: str) -> bool:
        return str(self.services[name].get("restart", "no")) == "no"

    def by_image(self, prefix: str) -> list[str]:
        return [n for n, s in self.services.items() if str(s.get("image", "")).startswith(prefix)]

    def brokers(self) -> list[str]:
        return sorted(self.by_image("apache/kafka:"))

    def runs_code(self, name: str) -> bool:
        cmd = self.command(name)
        return bool(cmd) and (
            cmd[0] == "repovault"
            or cmd[:2] == ["dagster", "code-server"]
            or cmd[:3] == ["dagster", "api", "grpc"]
        )

    def runs_dagster(self, name: str) -> bool:
        cmd = self.command(name)
        return bool(cmd) and cmd[0] in ("dagster", "dagster-webserver", "dagster-daemon")

    def proxy_on(self, port_variable: str) -> str:
        """The oauth2-proxy service published on the port .env names `port_variable`."""
        port = int(self.dotenv[port_variable])
        (name,) = [
            n
            for n in self.by_image("quay.io/oauth2-proxy/oauth2-proxy:")
            if port in [host_port for _, host_port, _ in published_ports(self.services[n])]
        ]
        return name

    def proxy(self) -> str:
        """The operators' proxy: the whole Dagster UI, and the HTTP API under /api/."""
        return self.proxy_on("REPOVAULT_UI_PORT")

    def viewer_proxy(self) -> str:
        """The viewers' proxy: the read-only Dagster UI."""
        return self.proxy_on("REPOVAULT_VIEWER_UI_PORT")


@pytest.fixture(scope="module", params=[(BASE,), (BASE, HA)], ids=["single", "ha"])
def files(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return request.param


@pytest.fixture(scope="module", params=ENV_FILES)
def stack(
    request: pytest.FixtureRequest, files: tuple[str, ...], env_files: dict[str, Path]
) -> Stack:
    return Stack(files, request.param, env_files[request.param])


# --- what the code reads ----------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_HOLDERS = {"env", "environ", "environment"}


def _is_env_mapping(node: ast.AST) -> bool:
    """`os.environ`, `environ`, or a mapping the code calls `env` (Settings.from_env's)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in _ENV_HOLDERS


def _name(node: ast.AST) -> str | None:
    value = node.value if isinstance(node, ast.Constant) else None
    return value if isinstance(value, str) and _ENV_NAME.match(value) else None


def env_vars_read_by_code() -> set[str]:
    """Every environment variable name the package reads, found in its sources:
    `os.environ.get("X")`, `env.get("X")`, `os.environ["X"]`, `os.getenv("X")`, helpers
    handed the environment with a name (`_int(env, "X", ...)`), and the variables of the
    Settings fields (`validation_alias="X"`, `AliasChoices("X", "Y")`)."""
    names: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.keyword) and node.arg == "validation_alias":
                names.update(n for n in [_name(node.value)] if n)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "AliasChoices":
                names.update(n for arg in node.args if (n := _name(arg)))
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                if _is_env_mapping(node.value) and (name := _name(node.slice)):
                    names.add(name)
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                first = _name(node.args[0])
                if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault"):
                    if _is_env_mapping(func.value) and first:
                        names.add(first)
                elif getattr(func, "attr", getattr(func, "id", None)) == "getenv" and first:
                    names.add(first)
                elif any(_is_env_mapping(arg) for arg in node.args):
                    names.update(n for arg in node.args if (n := _name(arg)))
    return names


def env_vars_read_by_dagster_yaml() -> set[str]:
    text = (ROOT / "dagster.yaml").read_text()
    return set(re.findall(r"\{\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}", text))


def dockerfile_lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def dockerfile_cmd() -> list[str]:
    (cmd,) = [line for line in dockerfile_lines() if line.startswith("CMD ")]
    return json.loads(cmd[len("CMD ") :])


def dockerfile_env(name: str) -> str:
    for line in dockerfile_lines():
        if line.startswith("ENV "):
            match = re.search(rf"\b{name}=(\S+)", line)
            if match:
                return match.group(1)
    raise AssertionError(f"Dockerfile sets no ENV {name}")


def package_version() -> str:
    match = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text())
    assert match, "setup.py has no version"
    return match.group(1)


# --- small parsers of Compose's output --------------------------------------------------------


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of every published port, short or long syntax."""
    result = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") not in (None, ""):
                host_ip = port.get("host_ip", "")
                result.append((host_ip, int(port["published"]), int(port["target"])))
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            continue  # container port only: not published on a fixed host port
        host_ip = parts[0] if len(parts) == 3 else ""
        result.append((host_ip, int(parts[-2]), int(parts[-1])))
    return result


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every mount, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            kind = volume.get("type", "volume")
            mounts.append((kind, volume.get("source", ""), volume["target"]))
            continue
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0] if rest else source
        kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        mounts.append((kind, source if rest else "", target))
    return mounts


# --- Compose accepts the files ----------------------------------------------------------------


@pytest.mark.parametrize("files", [(BASE,), (BASE, HA)], ids=["single", "ha"])
def test_compose_config_is_valid(files: tuple[str, ...]) -> None:
    result = run_compose(files, ENV_EXAMPLE, "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_compose_refuses_to_start_without_each_secret(tmp_path: Path) -> None:
    """A secret has no default: without it Compose stops and names it (nothing starts with a
    guessable password). Checked with our reader everywhere, and with docker-compose where
    installed."""
    secrets = [k for k, v in parse_env_file(ENV_EXAMPLE).items() if v.startswith("change-me")]
    assert len(secrets) >= 7, secrets
    for secret in secrets:
        env_file = tmp_path / f"without-{secret}.env"
        env_file.write_text(
            "".join(f"{k}={v}\n" for k, v in parse_env_file(ENV_EXAMPLE).items() if k != secret)
        )
        with pytest.raises(ComposeError, match=secret):
            load((BASE,), env_file)
        if has_compose():
            result = run_compose((BASE,), env_file, "-q")
            assert result.returncode != 0, f"Compose starts without {secret}"
            assert secret in result.stderr, result.stderr


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """What both readers must agree on, in one form: per service the image, command,
    entrypoint, environment, published ports, mounts, dependencies, networks and aliases,
    health check and restart policy; the declared networks (internal or not) and volumes.
    (`docker-compose config` writes `$` back as `$$` so that its output can be read again.)"""

    def text(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("$$", "$")
        if isinstance(value, list):
            return [text(v) for v in value]
        return value

    services = {}
    for name, service in config["services"].items():
        networks = service.get("networks") or {"default": None}
        services[name] = {
            "image": service.get("image"),
            "command": text(service.get("command")),
            "entrypoint": text(service.get("entrypoint")),
            "environment": {
                k: "" if v is None else text(str(v))
                for k, v in (service.get("environment") or {}).items()
            },
            "ports": sorted(published_ports(service)),
            "volumes": sorted(volume_mounts(service)),
            "depends_on": service.get("depends_on") or {},
            "networks": {n: sorted((v or {}).get("aliases") or []) for n, v in networks.items()},
            "healthcheck": text((service.get("healthcheck") or {}).get("test")),
            "restart": str(service.get("restart", "no")),
            "hostname": service.get("hostname"),
        }
    return {
        "services": services,
        "networks": {n: bool((v or {}).get("internal")) for n, v in config["networks"].items()},
        "volumes": sorted(config.get("volumes") or {}),
    }


@pytest.mark.parametrize("files", [(BASE,), (BASE, HA)], ids=["single", "ha"])
def test_our_reader_agrees_with_docker_compose(
    files: tuple[str, ...], env_files: dict[str, Path]
) -> None:
    compose_binary()
    for env_file in env_files.values():
        result = run_compose(files, env_file)
        assert result.returncode == 0, result.stderr
        theirs = comparable(yaml.safe_load(result.stdout))
        ours = comparable(load(files, env_file))
        assert ours["services"].keys() == theirs["services"].keys()
        for name, service in ours["services"].items():
            assert service == theirs["services"][name], name
        assert (ours["networks"], ours["volumes"]) == (theirs["networks"], theirs["volumes"])


# --- .env.example -----------------------------------------------------------------------------


def compose_variables() -> set[str]:
    names = set()
    for name in (BASE, HA):
        text = (ROOT / name).read_text().replace("$$", "")
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
        names |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    return names


def test_env_example_lists_every_variable_and_no_other() -> None:
    listed = set(parse_env_file(ENV_EXAMPLE))
    used = compose_variables()
    assert used - listed == set(), "used by the compose files but missing from .env.example"
    assert listed - used - {"COMPOSE_PROJECT_NAME"} == set(), "listed but used nowhere"


def test_env_example_commits_no_secret() -> None:
    for key, value in parse_env_file(ENV_EXAMPLE).items():
        if SECRET_NAME.search(key):
            assert value == "" or value.startswith("change-me"), f"{key} holds a real value"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[0] == "**" or ".env" in ignore, ".env could be sent to the image build"
    assert not any(line.startswith("!") and ".env" in line for line in ignore)


# --- the environment of every service that runs the code --------------------------------------


def test_env_var_discovery_finds_the_known_settings() -> None:
    found = env_vars_read_by_code()
    assert {
        "REPOVAULT_KAFKA_BOOTSTRAP",
        "REPOVAULT_TOPIC_PENDING",
        "REPOVAULT_TOPIC_PARTITIONS",
        "REPOVAULT_S3_ENDPOINT",
        "REPOVAULT_DB_URL",
        "REPOVAULT_MAX_REPO_MB",
        "GITHUB_TOKEN",
        "REPOVAULT_SSH_KEY",
        "AWS_REGION",
    } <= found, found
    dagster_yaml = env_vars_read_by_dagster_yaml()
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"} <= dagster_yaml


def test_every_service_running_the_code_gets_every_variable_it_reads(stack: Stack) -> None:
    code_services = [name for name in stack.services if stack.runs_code(name)]
    assert {"init", "dagster-code"} <= set(code_services), code_services
    wanted = env_vars_read_by_code() | LIBRARY_VARS
    for name in code_services:
        env = stack.env(name)
        assert sorted(wanted - set(env)) == [], f"{name} lacks these variables the code reads"
        empty = sorted(k for k in MUST_BE_FILLED if not env[k])
        assert empty == [], f"{name}: empty {empty}"


def test_every_dagster_process_reads_the_production_instance(stack: Stack) -> None:
    dagster_services = [name for name in stack.services if stack.runs_dagster(name)]
    assert {"dagster-code", "dagster-daemon", "dagster-webserver"} <= set(dagster_services)
    home = dockerfile_env("DAGSTER_HOME")
    assert any(
        line.startswith("COPY ")
        and line.split()[1] == "dagster.yaml"
        and line.split()[-1].replace("${DAGSTER_HOME}", home) == f"{home}/dagster.yaml"
        for line in dockerfile_lines()
    ), "the image does not put dagster.yaml into DAGSTER_HOME"
    for name in dagster_services:
        env = stack.env(name)
        assert sorted(env_vars_read_by_dagster_yaml() - set(env)) == [], name
        assert env["DAGSTER_HOME"] == home, name
        assert all(env[k] for k in env_vars_read_by_dagster_yaml()), name


def test_ui_services_get_no_repository_secrets(stack: Stack) -> None:
    """The webserver, the daemon and the relay never run RepoVault's archive code (the first two
    load only its run coordinator): they get no token or S3 key."""
    for name in ("dagster-webserver", "dagster-viewer", "dagster-daemon", "dagster-code-relay"):
        assert not stack.runs_code(name)
        secrets = {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "REPOVAULT_DB_URL"}
        assert secrets.isdisjoint(stack.env(name)), name


def test_the_run_coordinator_tags_runs_with_the_code_servers_run_timeout(stack: Stack) -> None:
    """The daemon and the webserver submit runs through RepoVaultRunCoordinator (dagster.yaml),
    which tags archive runs with REPOVAULT_RUN_TIMEOUT_S: the one the code server's jobs use."""
    code = Settings.from_env(stack.env("dagster-code")).run_timeout_s
    for name in ("dagster-daemon", "dagster-webserver"):
        assert Settings.from_env(stack.env(name)).run_timeout_s == code, name


def test_code_services_agree_on_topics_and_settings(stack: Stack) -> None:
    """`repovault init` runs with the environment of the code server, so the topics (names,
    partitions, replication) it creates are the ones the injector and the CLI use."""
    code_services = [name for name in stack.services if stack.runs_code(name)]
    for name in code_services:
        assert stack.env(name) == stack.env("dagster-code"), f"{name} and dagster-code differ"
    settings = {name: Settings.from_env(stack.env(name)) for name in code_services}
    reference = settings["dagster-code"]
    for name, s in settings.items():
        assert s == reference, f"{name} and dagster-code disagree"
    topics = reference.topics
    assert topics.all() == SPEC_TOPICS
    assert topics.partitions == int(stack.dotenv["REPOVAULT_TOPIC_PARTITIONS"])
    assert reference.s3_endpoint == "http://minio:9000"
    assert reference.db_url.startswith("postgresql+psycopg2://")
    assert reference.db_url.endswith("@postgres:5432/repovault")
    assert reference.github_token == (stack.dotenv["REPOVAULT_GITHUB_TOKEN"] or None)

    brokers = stack.brokers()
    assert topics.replication_factor == (3 if stack.ha else 1) <= len(brokers)
    advertised = {
        stack.env(b)["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://") for b in brokers
    }
    assert set(reference.kafka_bootstrap.split(",")) == advertised


def test_init_service_creates_topics_and_tables_before_the_code_server(stack: Stack) -> None:
    init = stack.services["init"]
    assert stack.command("init") == ["repovault", "init"]
    assert stack.one_shot("init")
    assert init["image"] == stack.services["dagster-code"]["image"]
    assert stack.services["dagster-code"]["depends_on"]["init"] == {
        "condition": "service_completed_successfully"
    }
    for broker in stack.brokers():
        assert init["depends_on"][broker] == {"condition": "service_healthy"}
    assert init["depends_on"]["postgres"] == {"condition": "service_healthy"}


# --- networks: who can reach whom --------------------------------------------------------------

WORKSPACE = ROOT / "deploy" / "dagster" / "workspace.yaml"
_URL_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/]*@)?([A-Za-z0-9.-]+)(?::\d+)?")


def service_networks(stack: Stack, name: str) -> dict[str, set[str]]:
    """network -> the names the service answers to on it (its name and that network's aliases)."""
    service = stack.services[name]
    networks = service.get("networks") or {"default": None}
    return {net: {name, *((cfg or {}).get("aliases") or [])} for net, cfg in networks.items()}


def peers(stack: Stack, name: str) -> set[str]:
    """Services whose every port `name` can open: those on a network it is on too."""
    own = set(service_networks(stack, name))
    return {n for n in stack.services if n != name and own & set(service_networks(stack, n))}


def resolve(stack: Stack, name: str, host: str) -> set[str]:
    """The services `host` means to `name`: whoever answers to it on one of its networks."""
    own = set(service_networks(stack, name))
    return {
        n
        for n in stack.services
        for net, names in service_networks(stack, n).items()
        if net in own and host in names
    }


def relay_target(stack: Stack, name: str) -> tuple[str, int] | None:
    """(host, port) a socat relay opens for every connection it accepts, else None."""
    command = stack.command(name)
    if command[:1] != ["socat"]:
        return None
    (target,) = [arg for arg in command[1:] if arg.startswith("TCP:")]
    host, port = target.removeprefix("TCP:").split(",")[0].rsplit(":", 1)
    return host, int(port)


def reachable(stack: Stack, name: str) -> set[str]:
    """Every service `name` can send a connection to: its peers, and through each relay among
    them (or reached through one) the relay's target only."""
    reach = peers(stack, name)
    while True:
        more = {
            target
            for relay in reach
            if (found := relay_target(stack, relay))
            for target in resolve(stack, relay, found[0])
        } - reach
        if not more:
            return reach
        reach |= more


def workspace_server() -> tuple[str, int]:
    (location,) = yaml.safe_load(WORKSPACE.read_text())["load_from"]
    return location["grpc_server"]["host"], int(location["grpc_server"]["port"])


def clone_runner(stack: Stack) -> str:
    """The service where runs execute: the code server the daemon launches runs through."""
    (runner,) = resolve(stack, "dagster-daemon", workspace_server()[0])
    assert stack.runs_code(runner), runner
    return runner


def url_host(url: str) -> str:
    match = _URL_HOST.match(url)
    assert match, url
    return match.group(1)


def test_every_service_names_its_networks(stack: Stack) -> None:
    """No service on Compose's implicit default network, which would join them all."""
    for name, service in stack.services.items():
        assert service.get("network_mode") is None, f"{name}: network_mode bypasses networks"
        assert service.get("networks"), f"{name} is on the default network with everyone"
        assert "default" not in service["networks"], name


def test_clones_cannot_reach_the_webserver_nor_the_sign_in(stack: Stack) -> None:
    """The containers that run RepoVault's code, where runs clone untrusted repositories, can
    open no connection to the Dagster webserver (no sign-in of its own), the proxy or Keycloak:
    computed from the networks they share and the relays' forwarding."""
    assert clone_runner(stack) == "dagster-code"
    guarded = {"dagster-webserver", "dagster-viewer", stack.proxy(), stack.viewer_proxy()}
    guarded |= {"keycloak", "keycloak-db"}
    for name in [n for n in stack.services if stack.runs_code(n)]:
        # The HTTP API fetches the realm's signing keys from Keycloak: that one, and only it.
        allowed = {"keycloak"} if name == "api" else set()
        assert guarded.isdisjoint(reachable(stack, name) - allowed), name
        assert guarded.isdisjoint(peers(stack, name) - allowed), name
    assert "keycloak" not in reachable(stack, clone_runner(stack))
    # The webservers' own peers: their proxy, the relay, PostgreSQL. Nothing that runs code.
    for webserver in ("dagster-webserver", "dagster-viewer"):
        assert not any(stack.runs_code(n) for n in peers(stack, webserver)), webserver


def test_the_webserver_reaches_the_code_server_through_a_one_way_relay(stack: Stack) -> None:
    """One workspace file for webserver and daemon: the name it gives is the code server on
    the daemon's network and the relay on the webserver's, which forwards to the code server's
    gRPC port and nothing else."""
    host, port = workspace_server()
    runner = clone_runner(stack)
    assert f"-p {port}" in " ".join(stack.command(runner))
    (relay,) = resolve(stack, "dagster-webserver", host)
    assert relay != runner and not stack.runs_code(relay)
    target = relay_target(stack, relay)
    assert target is not None and target[1] == port, target
    assert resolve(stack, relay, target[0]) == {runner}
    assert not stack.services[relay].get("environment"), "the relay needs no secret"
    assert stack.services["dagster-webserver"]["depends_on"][relay] == {
        "condition": "service_healthy"
    }


def test_every_connection_the_stack_makes_resolves_to_one_service(stack: Stack) -> None:
    def one(name: str, host: str, expected: set[str] | None = None) -> str:
        found = resolve(stack, name, host)
        assert len(found) == 1, f"{name} -> {host}: {found or 'unreachable'}"
        assert expected is None or found <= expected, f"{name} -> {host}: {found}"
        return found.pop()

    brokers = set(stack.brokers())
    for name in [n for n in stack.services if stack.runs_code(n)]:
        settings = Settings.from_env(stack.env(name))
        for bootstrap in settings.kafka_bootstrap.split(","):
            one(name, url_host(bootstrap), brokers)
        one(name, url_host(settings.s3_endpoint or ""), {"minio"})
        one(name, url_host(settings.db_url.split("://", 1)[1]), {"postgres"})
    for name in [n for n in stack.services if stack.runs_dagster(n)]:
        one(name, stack.env(name)["DAGSTER_PG_HOST"], {"postgres"})
    for name, upstreams in (
        (stack.proxy(), {"dagster-webserver", "api-relay"}),
        (stack.viewer_proxy(), {"dagster-viewer"}),
    ):
        proxy = stack.env(name)
        for upstream in proxy["OAUTH2_PROXY_UPSTREAMS"].split(","):
            one(name, url_host(upstream), upstreams)
        one(name, url_host(proxy["OAUTH2_PROXY_REDEEM_URL"]), {"keycloak"})
    one("api-relay", relay_target(stack, "api-relay")[0], {"api"})
    one("api", url_host(stack.env("api")["REPOVAULT_OIDC_JWKS_URL"]), {"keycloak"})
    one("keycloak", url_host(stack.env("keycloak")["KC_DB_URL"].split("//")[1]), {"keycloak-db"})
    for url in re.findall(r"https?://[^\s\"']+", " ".join(stack.command("minio-init"))):
        one("minio-init", url_host(url), {"minio"})


def test_only_networks_that_need_the_outside_have_a_way_out(stack: Stack) -> None:
    """`internal` networks have no route out. The services that need one (those that publish a
    port, and the clone runner, which fetches from the internet) have one open network each, and
    an open network is one some such service could not do without."""
    runner = clone_runner(stack)
    internal = {n: bool((c or {}).get("internal")) for n, c in stack.config["networks"].items()}
    needs_outside = {
        name for name, service in stack.services.items() if published_ports(service)
    } | {runner}
    open_networks = {}
    for name in needs_outside:
        own = [net for net in service_networks(stack, name) if not internal[net]]
        assert own, f"{name} needs a network with a way out"
        open_networks[name] = own
    for network, is_internal in internal.items():
        assert any(network in service_networks(stack, n) for n in stack.services), network
        if not is_internal:
            assert any(nets == [network] for nets in open_networks.values()), (
                f"network {network} needs no way out: make it internal"
            )


# --- MinIO: RepoVault's own user and what it may do ------------------------------------------

VAULT = PACKAGE / "core" / "vault"
# What each boto3 S3 call of the vault (core/vault/) needs, as IAM actions (all|bucket|object).
S3_ACTIONS = {
    "list_buckets": [("s3:ListAllMyBuckets", "all")],
    "create_bucket": [("s3:CreateBucket", "bucket")],
    "head_bucket": [("s3:ListBucket", "bucket")],
    "list_objects_v2": [("s3:ListBucket", "bucket")],
    "get_object": [("s3:GetObject", "object")],
    "head_object": [("s3:GetObject", "object")],
    "download_file": [("s3:GetObject", "object")],
    "put_object": [("s3:PutObject", "object")],
    "upload_file": [("s3:PutObject", "object"), ("s3:AbortMultipartUpload", "object")],
    "copy_object": [("s3:GetObject", "object"), ("s3:PutObject", "object")],
    "delete_object": [("s3:DeleteObject", "object")],
    "delete_objects": [("s3:DeleteObject", "object")],
}


def s3_calls_in_code() -> set[str]:
    """The boto3 operations the vault's S3 modules perform: `self.client.X(...)`, paginators."""
    calls = set()
    sources = [path.read_text() for path in VAULT.rglob("*.py")]
    trees = [ast.parse(text) for text in sources if "boto" in text]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Attribute) and owner.attr == "client":
            if node.func.attr == "get_paginator":
                calls.add(node.args[0].value)  # type: ignore[attr-defined]
            else:
                calls.add(node.func.attr)
    return calls


def policy_allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", "the policy only grants"
        actions = [a.lower() for a in statement["Action"]]
        if any(fnmatch(action.lower(), a) for a in actions) and any(
            fnmatch(resource, r) for r in statement["Resource"]
        ):
            return True
    return False


def arn(scope: str, bucket: str) -> str:
    return {"all": "arn:aws:s3:::*", "bucket": f"arn:aws:s3:::{bucket}"}.get(
        scope, f"arn:aws:s3:::{bucket}/snapshots/x/manifest.json"
    )


def minio_policy(stack: Stack) -> dict[str, Any]:
    return json.loads(stack.env("minio-init")["REPOVAULT_S3_POLICY"])


def test_repovault_code_uses_its_own_minio_user_never_root(stack: Stack) -> None:
    root_user, root_password = stack.dotenv["MINIO_ROOT_USER"], stack.dotenv["MINIO_ROOT_PASSWORD"]
    user, secret = stack.dotenv["REPOVAULT_S3_ACCESS_KEY"], stack.dotenv["REPOVAULT_S3_SECRET_KEY"]
    assert user != root_user and secret != root_password
    for name in [n for n in stack.services if stack.runs_code(n)]:
        env = stack.env(name)
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (user, secret), name
    for name in stack.services:
        values = " ".join(str(v) for v in stack.env(name).values())
        holds_root = root_password in values
        assert holds_root == (name in ("minio", "minio-init")), f"{name} and the root password"

    init = stack.services["minio-init"]
    assert init["image"] == stack.services["minio"]["image"] and stack.one_shot("minio-init")
    assert init["depends_on"]["minio"] == {"condition": "service_healthy"}
    assert stack.services[clone_runner(stack)]["depends_on"]["minio-init"] == {
        "condition": "service_completed_successfully"
    }
    env = stack.env("minio-init")
    assert (env["REPOVAULT_S3_ACCESS_KEY"], env["REPOVAULT_S3_SECRET_KEY"]) == (user, secret)
    script = " ".join(stack.command("minio-init"))
    for step in ("mc admin policy create", "mc admin user add", "mc admin policy attach"):
        assert step in script, step
    used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", script))
    assert used and used <= set(env), (
        f"the script reads variables it is not given: {used - set(env)}"
    )


def test_minio_encrypts_every_object_and_the_code_requires_it(stack: Stack) -> None:
    """MinIO has its built-in KMS key, no other service holds it, and every service running
    the code asks for SSE with it (so it refuses a MinIO that does not encrypt)."""
    key = stack.dotenv["MINIO_KMS_SECRET_KEY"]
    assert stack.env("minio")["MINIO_KMS_SECRET_KEY"] == key
    for name in stack.services:
        values = " ".join(str(v) for v in stack.env(name).values())
        assert (key in values) == (name == "minio"), f"{name} and the KMS key"
    for name in [n for n in stack.services if stack.runs_code(n)]:
        settings = Settings.from_env(stack.env(name))
        assert (settings.s3_sse, settings.s3_sse_kms_key_id) == ("aws:kms", None), name
        assert settings.encrypt_recipients == () and settings.decrypt_identity is None, name


def test_the_minio_policy_grants_what_the_code_calls_on_its_buckets_only(stack: Stack) -> None:
    policy = minio_policy(stack)
    prefix = Settings.from_env(stack.env("dagster-code")).bucket_prefix
    assert prefix == stack.dotenv["REPOVAULT_BUCKET_PREFIX"]
    calls = s3_calls_in_code()
    assert {"put_object", "get_object", "list_buckets"} <= calls, calls
    unknown = calls - set(S3_ACTIONS)
    assert not unknown, f"core/vault/ calls {unknown}: add their IAM actions to S3_ACTIONS"
    needed = {pair for call in calls for pair in S3_ACTIONS[call]}
    ours, theirs = f"{prefix}octo-hello-0123abcd", "someone-elses-bucket"
    for action, scope in needed:
        assert policy_allows(policy, action, arn(scope, ours)), (action, scope)
        if scope != "all":
            assert not policy_allows(policy, action, arn(scope, theirs)), (action, scope)
    granted = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert granted == {action for action, _ in needed}, "the policy grants more than needed"
    assert not any("*" in a for a in granted)
    for dangerous in ("s3:DeleteBucket", "s3:PutBucketPolicy", "s3:PutObjectAcl", "admin:*"):
        assert not policy_allows(policy, dangerous, arn("bucket", ours))


# --- Kafka ------------------------------------------------------------------------------------


def test_kafka_runs_in_kraft_mode_without_topic_auto_creation(stack: Stack) -> None:
    brokers = stack.brokers()
    assert len(brokers) == (3 if stack.ha else 1)
    for name, service in stack.services.items():
        assert "zookeeper" not in (name + str(service.get("image", ""))).lower(), name
    envs = [stack.env(b) for b in brokers]
    hosts = [e["KAFKA_ADVERTISED_LISTENERS"].split("//")[1].split(":")[0] for e in envs]
    voters = {f"{e['KAFKA_NODE_ID']}@{host}:9093" for e, host in zip(envs, hosts, strict=True)}
    identity = ("KAFKA_NODE_ID", "KAFKA_ADVERTISED_LISTENERS")
    for broker, env in zip(brokers, envs, strict=True):
        assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env), broker
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, broker
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, broker
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", broker
        assert env["CLUSTER_ID"] == envs[0]["CLUSTER_ID"], broker
        expected_isr = "2" if stack.ha else "1"
        expected_rf = str(len(brokers))
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == expected_isr, broker
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == expected_rf, broker
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == expected_rf, broker
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == expected_isr, broker
        # Apart from its identity, every broker is configured like the first.
        same = {k: v for k, v in env.items() if k not in identity}
        first = {k: v for k, v in envs[0].items() if k not in identity}
        assert same == first, broker
    assert len({e["KAFKA_NODE_ID"] for e in envs}) == len(brokers)


# --- what is published, pinned, checked and kept ----------------------------------------------


def test_only_the_proxy_leads_to_the_dagster_ui(stack: Stack) -> None:
    assert published_ports(stack.services["dagster-webserver"]) == []
    for name, service in stack.services.items():
        assert service.get("network_mode") != "host", name
        assert 3000 not in [target for _, _, target in published_ports(service)], name
    proxy = stack.proxy()
    env = stack.env(proxy)
    listen_port = int(env["OAUTH2_PROXY_HTTP_ADDRESS"].rsplit(":", 1)[1])
    bind, ui_port = stack.dotenv["REPOVAULT_BIND_ADDRESS"], int(stack.dotenv["REPOVAULT_UI_PORT"])
    assert published_ports(stack.services[proxy]) == [(bind, ui_port, listen_port)]
    assert env["OAUTH2_PROXY_UPSTREAMS"].split(",") == [
        "http://dagster-webserver:3000/",
        "http://api-relay:8080/api/",
    ]
    assert "-p 3000" in " ".join(stack.command("dagster-webserver"))
    assert env["OAUTH2_PROXY_REDIRECT_URL"] == (
        f"http://{stack.dotenv['REPOVAULT_PUBLIC_HOST']}:{stack.dotenv['REPOVAULT_UI_PORT']}"
        "/oauth2/callback"
    )


def test_the_http_api_is_reached_only_through_the_proxy(stack: Stack) -> None:
    """`repovault serve` publishes no port, shares no network with the proxy, and the proxy's
    /api/ upstream is a relay that forwards to the API's port and nothing else."""
    assert stack.command("api")[:2] == ["repovault", "serve"]
    port = int(stack.command("api")[stack.command("api").index("--port") + 1])
    assert published_ports(stack.services["api"]) == []
    assert published_ports(stack.services["api-relay"]) == []
    assert stack.proxy() not in peers(stack, "api")
    host, target_port = relay_target(stack, "api-relay")
    assert target_port == port and resolve(stack, "api-relay", host) == {"api"}
    assert not stack.services["api-relay"].get("environment"), "the relay needs no secret"
    assert stack.proxy() in peers(stack, "api-relay")


def test_every_image_is_pinned(stack: Stack) -> None:
    for name, service in stack.services.items():
        image = str(service.get("image", ""))
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image!r} is not a version"
        if "build" in service:
            assert tag == package_version(), f"{name}: the project image follows setup.py"
    froms = [line.split()[1] for line in dockerfile_lines() if line.startswith("FROM ")]
    assert froms, "Dockerfile has no FROM"
    for base in froms:
        assert re.search(r":[^:/]*\d", base) or "@sha256:" in base, f"Dockerfile FROM {base}"


def test_the_image_runs_as_a_user_with_git() -> None:
    lines = dockerfile_lines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert any(line.startswith("RUN ") and re.search(r"install\b.*\bgit\b", line) for line in lines)
    assert any(line.startswith("RUN ") and "--no-build-isolation ." in line for line in lines)


def test_long_running_services_have_health_checks(stack: Stack) -> None:
    for name, service in stack.services.items():
        if stack.one_shot(name):
            continue
        check = service.get("healthcheck") or {}
        test = check.get("test")
        assert test and not check.get("disable") and test[0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health(stack: Stack) -> None:
    for name, service in stack.services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        for target, rule in depends.items():
            if stack.one_shot(target):
                assert rule == {"condition": "service_completed_successfully"}, (name, target)
            else:
                assert rule == {"condition": "service_healthy"}, (name, target)
                assert stack.services[target].get("healthcheck"), target
    assert set(stack.services[stack.proxy()]["depends_on"]) >= {"keycloak", "dagster-webserver"}


def test_services_keep_their_data_in_named_volumes(stack: Stack) -> None:
    declared = set(stack.config.get("volumes") or {})
    expected = {n: d for n, d in DATA_DIRS.items() if n in stack.services}
    assert {"postgres", "keycloak-db", "minio", "kafka"} <= set(expected)
    for name, data_dir in expected.items():
        mounts = {t: (kind, source) for kind, source, t in volume_mounts(stack.services[name])}
        assert data_dir in mounts, f"{name} keeps {data_dir} in the container"
        kind, source = mounts[data_dir]
        assert kind == "volume" and source in declared, f"{name}: {data_dir} is not a named volume"
    brokers = stack.brokers()
    sources = [
        dict((t, s) for _, s, t in volume_mounts(stack.services[b]))[DATA_DIRS["kafka"]]
        for b in brokers
    ]
    assert len(set(sources)) == len(brokers), "two brokers share one volume"


def test_the_code_server_keeps_its_mirrors_in_a_named_volume(stack: Stack) -> None:
    """Runs execute on dagster-code: the mirrors they fetch into outlive its container."""
    mirror_dir = stack.env("dagster-code")["REPOVAULT_MIRROR_DIR"]
    mounts = {t: (kind, s) for kind, s, t in volume_mounts(stack.services["dagster-code"])}
    kind, source = mounts[mirror_dir]
    assert kind == "volume" and source in set(stack.config.get("volumes") or {})
    assert mirror_dir != stack.env("dagster-code")["REPOVAULT_WORK_DIR"]


# --- Keycloak realm and the proxy -------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")


def resolve_placeholders(value: Any, env: dict[str, str]) -> Any:
    """What Keycloak's --import-realm makes of ${VAR} / ${VAR:default} in the realm file."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            assert name in env or default is not None, f"realm placeholder ${{{name}}} is unset"
            return env.get(name, default or "")

        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, list):
        return [resolve_placeholders(v, env) for v in value]
    if isinstance(value, dict):
        return {k: resolve_placeholders(v, env) for k, v in value.items()}
    return value


def test_realm_file_matches_the_proxy(stack: Stack) -> None:
    keycloak = stack.services["keycloak"]
    assert "--import-realm" in stack.command("keycloak")
    imported = [(s, t) for kind, s, t in volume_mounts(keycloak) if kind == "bind"]
    assert any(
        Path(s) == REALM_FILE and t.startswith(IMPORT_DIR + "/") and t.endswith(".json")
        for s, t in imported
    ), imported

    raw = json.loads(REALM_FILE.read_text())
    kc_env = stack.env("keycloak")
    realm = resolve_placeholders(raw, kc_env)
    proxy = stack.env(stack.proxy())
    public = f"http://{stack.dotenv['REPOVAULT_PUBLIC_HOST']}:{stack.dotenv['KEYCLOAK_PORT']}"

    # Issuer: the browser-facing URL Keycloak writes into tokens, and the realm's name.
    assert kc_env["KC_HOSTNAME"] == public
    issuer = f"{public}/realms/{realm['realm']}"
    assert realm["realm"] == "repovault"
    assert proxy["OAUTH2_PROXY_PROVIDER"] == "keycloak-oidc"
    assert proxy["OAUTH2_PROXY_OIDC_ISSUER_URL"] == issuer
    oidc = f"/realms/{realm['realm']}/protocol/openid-connect"
    assert proxy["OAUTH2_PROXY_LOGIN_URL"] == f"{public}{oidc}/auth"
    internal = "http://keycloak:8080"
    assert proxy["OAUTH2_PROXY_REDEEM_URL"] == f"{internal}{oidc}/token"
    assert proxy["OAUTH2_PROXY_OIDC_JWKS_URL"] == f"{internal}{oidc}/certs"
    assert published_ports(keycloak) == [
        (stack.dotenv["REPOVAULT_BIND_ADDRESS"], int(stack.dotenv["KEYCLOAK_PORT"]), 8080)
    ]

    # The confidential client of the proxy.
    (client,) = [c for c in realm["clients"] if c["clientId"] == proxy["OAUTH2_PROXY_CLIENT_ID"]]
    (raw_client,) = [c for c in raw["clients"] if c["clientId"] == proxy["OAUTH2_PROXY_CLIENT_ID"]]
    assert client["publicClient"] is False and client["standardFlowEnabled"] is True
    assert client.get("directAccessGrantsEnabled") is False
    secret_var = _PLACEHOLDER.fullmatch(raw_client["secret"])
    assert secret_var, "the client secret must come from the environment, not the file"
    assert client["secret"] == proxy["OAUTH2_PROXY_CLIENT_SECRET"]
    assert client["secret"] == stack.dotenv[secret_var.group(1)]
    viewer_proxy = stack.env(stack.viewer_proxy())
    assert viewer_proxy["OAUTH2_PROXY_CLIENT_ID"] == client["clientId"]
    assert viewer_proxy["OAUTH2_PROXY_CLIENT_SECRET"] == client["secret"]
    assert client["redirectUris"] == [
        proxy["OAUTH2_PROXY_REDIRECT_URL"],
        viewer_proxy["OAUTH2_PROXY_REDIRECT_URL"],
    ]
    assert (
        client["attributes"]["pkce.code.challenge.method"]
        == proxy["OAUTH2_PROXY_CODE_CHALLENGE_METHOD"]
    )
    # keycloak-oidc reads the roles from the access token, whose audience must be the client.
    audiences = [
        m["config"].get("included.client.audience")
        for m in client["protocolMappers"]
        if m["protocolMapper"] == "oidc-audience-mapper"
        and m["config"].get("access.token.claim") == "true"
    ]
    assert audiences == [client["clientId"]]

    # The operators' role, and a first operator whose password comes from .env.
    role = proxy["OAUTH2_PROXY_ALLOWED_ROLES"]
    assert role == "repovault-operator"
    assert role in [r["name"] for r in realm["roles"]["realm"]]
    (raw_user,) = [u for u in raw["users"] if "serviceAccountClientId" not in u]
    (user,) = [u for u in realm["users"] if "serviceAccountClientId" not in u]
    assert role in user["realmRoles"] and user["enabled"] and user["emailVerified"]
    assert user["username"] == stack.dotenv["REPOVAULT_OPERATOR_USERNAME"]
    (password,) = raw_user["credentials"]
    password_var = _PLACEHOLDER.fullmatch(password["value"])
    assert password_var, "the operator's password must come from the environment"
    assert user["credentials"][0]["value"] == stack.dotenv[password_var.group(1)]
    assert password_var.group(1) in parse_env_file(ENV_EXAMPLE)


def test_scripts_reach_the_api_through_the_proxy_with_a_bearer_token(stack: Stack) -> None:
    """The proxy lets /api/ through without its sign-in, the Authorization header untouched
    (the API checks every call itself), and nothing else; the API accepts the realm's access
    tokens: same issuer as the proxy's, keys from the realm, the audience the realm's script
    client puts in its tokens, scopes from realm roles the realm defines."""
    raw = json.loads(REALM_FILE.read_text())
    realm = resolve_placeholders(raw, stack.env("keycloak"))
    proxy = stack.env(stack.proxy())
    assert proxy["OAUTH2_PROXY_SKIP_AUTH_ROUTES"] == "^/api/"
    assert "OAUTH2_PROXY_SKIP_JWT_BEARER_TOKENS" not in proxy  # the UI keeps its sign-in
    assert any(u.endswith("/api/") for u in proxy["OAUTH2_PROXY_UPSTREAMS"].split(","))

    api = Settings.from_env(stack.env("api"))
    assert api.oidc_issuer == proxy["OAUTH2_PROXY_OIDC_ISSUER_URL"]
    assert api.oidc_jwks_url == proxy["OAUTH2_PROXY_OIDC_JWKS_URL"]
    roles = {r["name"] for r in realm["roles"]["realm"]}
    assert {"repovault-read", "repovault-submit", "repovault-admin"} <= roles

    (client,) = [c for c in realm["clients"] if c["clientId"] == "repovault-scripts"]
    (raw_client,) = [c for c in raw["clients"] if c["clientId"] == "repovault-scripts"]
    assert client["serviceAccountsEnabled"] and not client["standardFlowEnabled"]
    assert not client["publicClient"] and not client["directAccessGrantsEnabled"]
    secret_var = _PLACEHOLDER.fullmatch(raw_client["secret"])
    assert secret_var and secret_var.group(1) in parse_env_file(ENV_EXAMPLE)
    assert client["secret"] == stack.dotenv[secret_var.group(1)]
    audiences = {
        m["config"].get("included.custom.audience")
        for m in client["protocolMappers"]
        if m["protocolMapper"] == "oidc-audience-mapper"
        and m["config"].get("access.token.claim") == "true"
    }
    assert audiences & set(api.oidc_audience)
    (account,) = [
        u for u in realm["users"] if u.get("serviceAccountClientId") == client["clientId"]
    ]
    assert account["realmRoles"] and set(account["realmRoles"]) <= roles


KC_SH = "/opt/keycloak/bin/kc.sh"


def keycloak_start(stack: Stack, tmp_path: Path) -> tuple[dict[str, str], str, list[str]]:
    """Run the keycloak service's entrypoint with bash, its environment and command, with the
    image's kc.sh replaced by a stand-in: the environment kc.sh (and so the realm import)
    would get, what the entrypoint said on stderr, and the arguments kc.sh got."""
    entrypoint = list(stack.services["keycloak"]["entrypoint"])
    assert entrypoint[:2] == ["/bin/bash", "-c"] and f'exec {KC_SH} "$@"' in entrypoint[2]
    stand_in = tmp_path / "kc.sh"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.args"\nenv -0\n')
    stand_in.chmod(0o755)
    script = entrypoint[2].replace(KC_SH, str(stand_in))
    env = {"PATH": "/usr/bin:/bin", **stack.env("keycloak")}
    done = subprocess.run(
        ["bash", "-c", script, *entrypoint[3:], *stack.command("keycloak")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    seen = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    args = Path(f"{stand_in}.args").read_text().splitlines()
    return seen, done.stderr, args


def secret_values(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of every secret, password and credential value in the realm file."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from secret_values(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from secret_values(v, key)
    elif isinstance(value, str) and (re.search(r"secret|password", key, re.I) or key == "value"):
        yield key, value


def github_provider(realm: dict[str, Any]) -> dict[str, Any]:
    (provider,) = [p for p in realm.get("identityProviders", []) if p["alias"] == "github"]
    return provider


def test_github_sign_in_comes_from_env_and_is_off_while_unset(stack: Stack, tmp_path: Path) -> None:
    """The realm's `github` identity provider takes its client id and secret from .env through
    Keycloak's ${...} placeholders (no secret in the file), and is enabled exactly when both
    are set: the entrypoint decides, kc.sh then starts with the realm import as before."""
    raw = json.loads(REALM_FILE.read_text())
    provider = github_provider(raw)
    assert (provider["providerId"], provider["trustEmail"]) == ("github", False)
    config = provider["config"]
    id_var = _PLACEHOLDER.fullmatch(config["clientId"])
    secret_var = _PLACEHOLDER.fullmatch(config["clientSecret"])
    assert id_var and secret_var, "the GitHub client id and secret must come from the env"
    assert (id_var.group(1), secret_var.group(1)) == (
        "KEYCLOAK_GITHUB_CLIENT_ID",
        "KEYCLOAK_GITHUB_CLIENT_SECRET",
    )
    assert {id_var.group(1), secret_var.group(1)} <= set(parse_env_file(ENV_EXAMPLE))
    # No secret inline anywhere in the realm file: every secret and password is a placeholder.
    found = list(secret_values(raw))
    assert len(found) >= 4, found  # two clients, GitHub, the operator's password
    for key, value in found:
        assert _PLACEHOLDER.fullmatch(value), f"{key} holds a value in the realm file"

    env, said, args = keycloak_start(stack, tmp_path)
    assert args == ["start", "--import-realm"]
    realm = resolve_placeholders(raw, env)
    github = github_provider(realm)
    both = bool(stack.dotenv.get(id_var.group(1)) and stack.dotenv.get(secret_var.group(1)))
    assert github["enabled"] == ("true" if both else "false")
    assert github["config"]["clientId"] == stack.dotenv.get(id_var.group(1), "")
    assert github["config"]["clientSecret"] == stack.dotenv.get(secret_var.group(1), "")
    assert said == ""

    # One of the two alone: off, and the log says why in one line (never the value).
    half = {**stack.dotenv, "KEYCLOAK_GITHUB_CLIENT_SECRET": ""}
    half["KEYCLOAK_GITHUB_CLIENT_ID"] = "Ov23liOnlyTheId"
    half_file = tmp_path / "half.env"
    half_file.write_text("".join(f"{k}={v}\n" for k, v in half.items()))
    half_stack = Stack(stack.files, "half", half_file)
    env, said, _ = keycloak_start(half_stack, tmp_path)
    assert github_provider(resolve_placeholders(raw, env))["enabled"] == "false"
    assert said.count("\n") == 1 and "GitHub sign-in stays off" in said
    assert "Ov23liOnlyTheId" not in said


def test_viewers_and_operators_are_realm_roles_the_proxies_and_the_api_enforce(
    stack: Stack,
) -> None:
    """Operators pass the proxy of the whole UI; viewers (and operators) the proxy of the
    read-only webserver; the API maps the same realm roles to its scopes; nobody gets a
    RepoVault role by signing in (GitHub users included), and the proxies' client keeps the
    realm roles in its access tokens (keycloak-oidc reads them there)."""
    raw = json.loads(REALM_FILE.read_text())
    realm = resolve_placeholders(raw, stack.env("keycloak"))
    roles = {r["name"] for r in realm["roles"]["realm"]}
    assert {"repovault-viewer", "repovault-operator"} <= roles

    operators = stack.env(stack.proxy())
    viewers = stack.env(stack.viewer_proxy())
    assert operators["OAUTH2_PROXY_ALLOWED_ROLES"] == "repovault-operator"
    assert set(viewers["OAUTH2_PROXY_ALLOWED_ROLES"].split(",")) == {
        "repovault-viewer",
        "repovault-operator",
    }
    assert viewers["OAUTH2_PROXY_PROVIDER"] == "keycloak-oidc"
    assert viewers["OAUTH2_PROXY_OIDC_ISSUER_URL"] == operators["OAUTH2_PROXY_OIDC_ISSUER_URL"]
    # The viewers' proxy leads to one upstream, the read-only webserver, and skips no route.
    (upstream,) = viewers["OAUTH2_PROXY_UPSTREAMS"].split(",")
    (viewer_ui,) = resolve(stack, stack.viewer_proxy(), url_host(upstream))
    assert "--read-only" in stack.command(viewer_ui)
    assert stack.command(viewer_ui)[0] == "dagster-webserver"
    assert "--read-only" not in stack.command("dagster-webserver")
    assert published_ports(stack.services[viewer_ui]) == []
    assert not any(k.startswith("OAUTH2_PROXY_SKIP_AUTH") for k in viewers)
    assert viewers["OAUTH2_PROXY_COOKIE_NAME"] != operators["OAUTH2_PROXY_COOKIE_NAME"]
    bind, port = stack.dotenv["REPOVAULT_BIND_ADDRESS"], stack.dotenv["REPOVAULT_VIEWER_UI_PORT"]
    listen = int(viewers["OAUTH2_PROXY_HTTP_ADDRESS"].rsplit(":", 1)[1])
    assert published_ports(stack.services[stack.viewer_proxy()]) == [(bind, int(port), listen)]
    assert viewers["OAUTH2_PROXY_REDIRECT_URL"] == (
        f"http://{stack.dotenv['REPOVAULT_PUBLIC_HOST']}:{port}/oauth2/callback"
    )

    # The API: each role the realm defines for RepoVault gives a scope; viewer reads,
    # operator may do everything.
    assert set(ROLE_SCOPES) == {r for r in roles if r.startswith("repovault-")}
    assert ROLE_SCOPES["repovault-viewer"] == "read"
    assert ROLE_SCOPES["repovault-operator"] == SCOPES[-1]

    # Signing in gives no RepoVault role: no default role, no identity provider mapper.
    default_role = realm.get("defaultRole") or {}
    granted = set((default_role.get("composites") or {}).get("realm") or [])
    granted |= set(realm.get("defaultRoles") or [])
    assert granted.isdisjoint(roles)
    for mapper in realm.get("identityProviderMappers") or []:
        assert not any(r in json.dumps(mapper) for r in roles), mapper
    # Realm roles reach the access tokens: the default client scope `roles` is kept and the
    # clients do not narrow their role scope.
    assert "clientScopes" not in realm and "defaultDefaultClientScopes" not in realm
    for client in realm["clients"]:
        assert client.get("fullScopeAllowed", True), client["clientId"]
        assert "roles" in client.get("defaultClientScopes", ["roles"]), client["clientId"]


def test_proxy_cookie_secret_has_an_aes_length(stack: Stack) -> None:
    secret = stack.env(stack.proxy())["OAUTH2_PROXY_COOKIE_SECRET"]
    assert len(secret) in (16, 24, 32), "oauth2-proxy needs a 16, 24 or 32 byte cookie secret"


# --- make targets and CI ----------------------------------------------------------------------


def test_make_up_and_down_drive_compose() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("up", "down"):
        match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        assert match, f"Makefile has no {target} target"
        assert "$(COMPOSE)" in match.group(1) or "docker compose" in match.group(1)


def test_ci_installs_docker_compose() -> None:
    assert "docker-compose" in (ROOT / ".ci" / "run").read_text()


def test_make_env_writes_random_secrets_once_and_refuses_placeholders(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / "make-env.sh", tmp_path / "deploy" / "make-env.sh")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env.example")
    script = ["sh", str(tmp_path / "deploy" / "make-env.sh")]

    result = subprocess.run(script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    written = parse_env_file(tmp_path / ".env")
    example = parse_env_file(ENV_EXAMPLE)
    assert list(written) == list(example)
    secrets = [k for k, v in example.items() if v.startswith("change-me")]
    for key in secrets:
        if key == "MINIO_KMS_SECRET_KEY":  # MinIO's format: a key name and 32 bytes in base64
            name, _, key_b64 = written[key].partition(":")
            assert name == "repovault-key" and len(base64.b64decode(key_b64)) == 32
            continue
        assert re.fullmatch(r"[A-Za-z0-9]{32}", written[key]), key
        assert written[key] not in result.stdout + result.stderr, "a secret was printed"
    assert len({written[k] for k in secrets}) == len(secrets)
    assert {k: v for k, v in written.items() if k not in secrets} == {
        k: v for k, v in example.items() if k not in secrets
    }
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0, ".env is readable by others"
    load((BASE, HA), tmp_path / ".env")  # Compose accepts it
    if has_compose():
        assert run_compose((BASE, HA), tmp_path / ".env", "-q").returncode == 0

    before = (tmp_path / ".env").read_text()
    assert subprocess.run(script, capture_output=True, timeout=30).returncode == 0
    assert (tmp_path / ".env").read_text() == before, "an existing .env was rewritten"

    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    refused = subprocess.run(script, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
