"""A small Compose file reader, so the stack's static checks run where `docker-compose` is not
installed: YAML anchors and `<<` merge keys (PyYAML), `.env` files, variable interpolation
(`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
`${VAR:+alt}`, `${VAR+alt}`, `$$`), `extends`, and the merge rules Compose applies to a second
`-f` file. The result has the shape `docker-compose config` prints (environment as a mapping,
`depends_on` with conditions, networks as a mapping, bind mounts with absolute sources), and
references are validated (undefined networks, volumes and dependencies are errors, as in Compose).

It reads what RepoVault's files use, not all of Compose: no profiles, no `include`, no nested
interpolation in defaults. `tests/deploy/test_compose.py` compares it with `docker-compose config`
wherever that tool is installed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ComposeError(ValueError):
    """The files cannot be loaded, for the reason Compose would give."""


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|(?P<named>[_A-Za-z][_A-Za-z0-9]*)"
    r"|\{(?P<braced>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<invalid>))"
)
# Service keys whose lists an override file replaces rather than extends.
_REPLACED = {"command", "entrypoint", "test"}
# Service keys whose lists are merged entry by entry, keyed by the container path.
_BY_TARGET = {"volumes", "devices"}


def read_env_file(path: Path) -> dict[str, str]:
    """A Compose `.env` file: KEY=VALUE lines, `#` comments, optional quotes around a value."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key.strip()):
            raise ComposeError(f"{path.name}:{number}: {raw!r} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Substitute variables in every string of `value` (mapping keys excepted), as Compose does."""
    if isinstance(value, dict):
        return {
            k: interpolate(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        name = match["braced"]
        if name is None:
            raise ComposeError(f"invalid interpolation format in {where}: {value!r}")
        op, arg, current = match["op"], match["arg"] or "", env.get(name)
        is_set, non_empty = current is not None, bool(current)
        if op is None:
            return current or ""
        if op in (":?", "?"):
            if (op == ":?" and not non_empty) or not is_set:
                raise ComposeError(
                    f"missing mandatory value for {where}: {name} is required ({arg or 'unset'})"
                )
            return current or ""
        if op == ":-":
            return current if non_empty else arg
        if op == "-":
            return current if is_set else arg
        if op == ":+":
            return arg if non_empty else ""
        return arg if is_set else ""  # "+"

    return _VARIABLE.sub(one, value)


def load_project(
    files: Iterable[Path], env: Mapping[str, str], project_dir: Path
) -> dict[str, Any]:
    """The configuration `docker-compose -f FILE... config` would print for `env`."""
    project: dict[str, Any] = {"services": {}, "networks": {}, "volumes": {}}
    for path in files:
        doc = _load_file(Path(path), env)
        services = doc.get("services") or {}
        for name, service in services.items():
            resolved = _resolve_extends(name, service, Path(path), env, ())
            current = project["services"].get(name)
            project["services"][name] = (
                _merge_service(current, resolved) if current is not None else resolved
            )
        for section in ("networks", "volumes"):
            for key, value in (doc.get(section) or {}).items():
                project[section][key] = {**(project[section].get(key) or {}), **(value or {})}
    for service in project["services"].values():
        _absolute_paths(service, project_dir)
    _validate(project)
    return project


def _load_file(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ComposeError(f"{path.name} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ComposeError(f"{path.name}: the top level must be a mapping")
    doc = {k: v for k, v in doc.items() if not str(k).startswith("x-") and k != "version"}
    doc = interpolate(doc, env)
    for name, service in (doc.get("services") or {}).items():
        if not isinstance(service, dict):
            raise ComposeError(f"{path.name}: service {name!r} must be a mapping")
        doc["services"][name] = _normalize(service)
    return doc


def _normalize(service: dict[str, Any]) -> dict[str, Any]:
    """The long forms `docker-compose config` prints: environment and networks as mappings,
    depends_on with conditions."""
    service = copy.deepcopy(service)
    environment = service.get("environment")
    if isinstance(environment, list):
        environment = dict(_env_item(item) for item in environment)
    if isinstance(environment, dict):
        service["environment"] = {
            k: None if v is None else _scalar(v) for k, v in environment.items()
        }
    networks = service.get("networks")
    if isinstance(networks, list):
        service["networks"] = {n: None for n in networks}
    depends = service.get("depends_on")
    if isinstance(depends, list):
        service["depends_on"] = {d: {"condition": "service_started"} for d in depends}
    return service


def _env_item(item: str) -> tuple[str, str | None]:
    key, sep, value = str(item).partition("=")
    return key, value if sep else None


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resolve_extends(
    name: str, service: dict[str, Any], path: Path, env: Mapping[str, str], seen: tuple
) -> dict[str, Any]:
    extends = service.get("extends")
    if extends is None:
        return service
    if isinstance(extends, str):
        extends = {"service": extends}
    base_path = (path.parent / extends["file"]) if extends.get("file") else path
    key = (str(base_path.resolve()), extends["service"])
    if key in seen:
        raise ComposeError(f"circular extends: {name} -> {extends['service']}")
    base_services = _load_file(base_path, env).get("services") or {}
    if extends["service"] not in base_services:
        raise ComposeError(
            f"service {name!r} extends {extends['service']!r}, which {base_path.name} lacks"
        )
    base = _resolve_extends(
        extends["service"], base_services[extends["service"]], base_path, env, (*seen, key)
    )
    # Compose never shares these through `extends`.
    base = {k: v for k, v in base.items() if k not in ("depends_on", "volumes_from", "links")}
    own = {k: v for k, v in service.items() if k != "extends"}
    return _merge_service(base, own)


def _merge_service(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    return _merge(base, override, "")


def _merge(base: Any, override: Any, key: str) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if key in _REPLACED:
            return copy.deepcopy(override)
        if key in _BY_TARGET:
            merged_mounts = {_mount_target(m): m for m in base}
            merged_mounts.update({_mount_target(m): m for m in override})
            return list(merged_mounts.values())
        return base + [item for item in override if item not in base]
    return copy.deepcopy(override)


def _mount_target(mount: Any) -> str:
    if isinstance(mount, dict):
        return str(mount.get("target"))
    parts = str(mount).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _absolute_paths(service: dict[str, Any], project_dir: Path) -> None:
    """Bind mount sources and build contexts relative to the project folder, made absolute."""
    volumes = []
    for mount in service.get("volumes") or []:
        if isinstance(mount, str) and mount.startswith((".", "~")):
            source, _, rest = mount.partition(":")
            source_path = Path(source).expanduser()
            if not source_path.is_absolute():
                source_path = (project_dir / source_path).resolve()
            mount = f"{source_path}:{rest}"
        volumes.append(mount)
    if "volumes" in service:
        service["volumes"] = volumes
    build = service.get("build")
    if isinstance(build, str):
        service["build"] = build = {"context": build}
    if isinstance(build, dict):
        build["context"] = str((project_dir / build.get("context", ".")).resolve())


def _validate(project: dict[str, Any]) -> None:
    services = project["services"]
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            raise ComposeError(f"service {name!r} has neither an image nor a build context")
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                raise ComposeError(f"service {name!r} depends on undefined service {dependency!r}")
        for network in service.get("networks") or {}:
            if network != "default" and network not in project["networks"]:
                raise ComposeError(f"service {name!r} uses an undefined network {network!r}")
        for source in filter(None, map(_named_volume, service.get("volumes") or [])):
            if source not in project["volumes"]:
                raise ComposeError(f"service {name!r} uses an undefined volume {source!r}")


def _named_volume(mount: Any) -> str | None:
    """The named volume a mount uses, or None (a bind mount, an anonymous volume)."""
    if isinstance(mount, dict):
        return mount.get("source") if mount.get("type", "volume") == "volume" else None
    source, sep, _ = str(mount).partition(":")
    return source if sep and not source.startswith(("/", ".", "~")) else None
