"""docs/schemas/ and docs/contract.md (its Kafka messages, its manifest) agree with the models: a
schema file that is stale (or missing, or left from a record that is gone) fails until `make
schemas` is run, and a field list of the contract that differs from its message's model fails
until the contract is corrected."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from repovault_pipeline.core.vault.records import BundleRecord, LfsSummary, Manifest, TreeSummary
from repovault_pipeline.schemas import (
    SCHEMAS_DIR,
    record_models,
    schema_name,
    schema_text,
    write_schemas,
)

CONTRACT = SCHEMAS_DIR.parent / "contract.md"


def test_every_schema_file_is_generated_from_its_model() -> None:
    models = record_models()
    for model in models:
        path = SCHEMAS_DIR / schema_name(model)
        assert path.exists(), f"{path} is missing: run `make schemas`"
        assert path.read_text() == schema_text(model), f"{path} is stale: run `make schemas`"
    names = {p.name for p in SCHEMAS_DIR.glob("*.schema.json")}
    assert names == {schema_name(m) for m in models}, "run `make schemas`"


def test_write_schemas_writes_the_files_and_removes_stale_ones(tmp_path: Path) -> None:
    (tmp_path / "gone.schema.json").write_text("{}")
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert all(p.read_text() == (SCHEMAS_DIR / p.name).read_text() for p in written)


def kafka_field_lists() -> dict[str, list[str]]:
    """schema file name -> the field names the contract lists for it: in the section "Kafka
    messages", the first `{...}` code span after each `[schema](schemas/<file>)` link."""
    text = CONTRACT.read_text()
    section = text[text.index("## Kafka messages") :]
    section = section[: section.index("\n## ", 1)]
    lists = {}
    for link in re.finditer(r"\[schema\]\(schemas/([\w.-]+)\)", section):
        span = re.search(r"`(\{[^`]*\})`", section[link.end() :])
        assert span, f"no field list after the link to {link[1]}"
        # A field name opens the object or follows a comma; `"kind": "dead_letter"` names one.
        lists[link[1]] = re.findall(r'[{,]\s*"(\w+)"', span[1])
    return lists


def test_the_contract_lists_the_fields_of_every_kafka_message() -> None:
    listed = kafka_field_lists()
    messages: list[type[BaseModel]] = [
        m for m in record_models() if m.__module__.startswith("repovault_pipeline.core.intake.")
    ]
    assert set(listed) == {schema_name(m) for m in messages}
    for model in messages:
        assert listed[schema_name(model)] == list(model.model_fields), model.__name__


def manifest_fields() -> dict[str, list[str]]:
    """What the contract's "Object layout" says `manifest.json` holds: each top-level field, with
    the fields it lists in parentheses for an object (`bundle` (`key`, `size`, `sha256`))."""
    text = CONTRACT.read_text()
    start = text.index("- `manifest.json` ([schema]")
    bullet = text[start : text.index("A wiki's", start)]
    fields: dict[str, list[str]] = {}
    for name, inner in re.findall(r"`(\w+)`(?:\s+\(([^)]*)\))?", bullet[bullet.index(" holds ") :]):
        fields[name] = re.findall(r"`(\w+)`", inner)
    return fields


def test_the_contract_lists_the_fields_of_the_manifest() -> None:
    listed = manifest_fields()
    assert set(listed) == set(Manifest.model_fields)
    for name, model in (("bundle", BundleRecord), ("tree", TreeSummary), ("lfs", LfsSummary)):
        assert set(listed[name]) == set(model.model_fields), name
