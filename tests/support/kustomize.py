"""`kustomize build` for deploy/kubernetes/, in Python: the tests run without kubectl.

Only what the manifests use: resources (files and directories), configMapGenerator and
secretGenerator (files, env files; names kept as written: disableNameSuffixHash), strategic-merge
patches naming their target by kind and name, `labels` (metadata only), `images` and
`namespace`. A kustomization using more is refused, so the manifests cannot drift past what the
tests check. Env files that hold secrets are never committed: `examples=True` reads
`<file>.example` beside them instead."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
    "labels",
    "images",
    "namespace",
}
CLUSTER_WIDE = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}


def build(folder: Path, examples: bool = True) -> list[Doc]:
    """The documents `kubectl kustomize folder` prints, in no particular order."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN
    assert not unknown, f"{folder}: the test assembler does not know {sorted(unknown)}"
    assert spec.get("generatorOptions", {}) == {"disableNameSuffixHash": True}, folder
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            docs += build(path, examples)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in spec.get("configMapGenerator", []):
        docs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", **_generated(folder, generator, examples)}
        )
    for generator in spec.get("secretGenerator", []):
        made = _generated(folder, generator, examples)
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in made.pop("data").items()}
        docs.append(
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", **made, "data": encoded}
        )
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, f"{folder}: patches name a file only"
        _patch(docs, yaml.safe_load((folder / patch["path"]).read_text()))
    for label in spec.get("labels", []):
        assert label.get("includeSelectors") is False and "includeTemplates" not in label
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    for image in spec.get("images", []):
        _retag(docs, image)
    if "namespace" in spec:
        _namespace(docs, spec["namespace"])
    return docs


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one document of that kind and name."""
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(doc: Doc) -> list[Doc]:
    """The containers of a Deployment's or Job's pod template (none for other kinds)."""
    if doc["kind"] not in {"Deployment", "Job"}:
        return []
    return list(doc["spec"]["template"]["spec"]["containers"])


def _generated(folder: Path, generator: Doc, examples: bool) -> Doc:
    data: dict[str, str] = {}
    for name in generator.get("files", []):
        data[Path(name).name] = (folder / name).read_text()
    for name in generator.get("envs", []):
        path = folder / (f"{name}.example" if examples else name)
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                data[key.strip()] = value
    return {"metadata": {"name": generator["name"]}, "data": data}


def _patch(docs: list[Doc], patch: Doc) -> None:
    target = find(docs, patch["kind"], patch["metadata"]["name"])
    _merge(target, patch)


def _merge(into: Doc, patch: Doc) -> None:
    """Strategic merge as the manifests need it: maps merge, lists of named items merge by
    name (containers, env, volumes), any other list is replaced."""
    for key, value in patch.items():
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and _named(value) and _named(old):
            by_name = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    old.append(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(value)


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and "name" in item for item in items)


def _retag(docs: list[Doc], image: Doc) -> None:
    for doc in docs:
        for container in containers(doc):
            name = container["image"].split(":", 1)[0]
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def _namespace(docs: list[Doc], namespace: str) -> None:
    for doc in docs:
        if doc["kind"] not in CLUSTER_WIDE:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            if subject["kind"] == "ServiceAccount":
                subject["namespace"] = namespace
