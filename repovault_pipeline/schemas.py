"""The JSON Schemas in docs/schemas/, generated from the pydantic models of the records other
programs read (the Kafka messages, a snapshot's manifest and `latest.json`), so the files cannot
drift from the code: `python -m repovault_pipeline.schemas` (`make schemas`) writes them, and
tests/test_schemas.py fails when one is stale. Each schema says what a reader accepts
(pydantic's validation mode)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

from pydantic import BaseModel

# Every record with a schema, as "module:Model"; its file is docs/schemas/<model-name>.schema.json.
RECORDS = (
    "repovault_pipeline.core.intake.messages:RequestMessage",
    "repovault_pipeline.core.intake.messages:StatusEvent",
    "repovault_pipeline.core.intake.dead_letters:DeadLetter",
    "repovault_pipeline.core.intake.dead_letters:PositionResetEvent",
    "repovault_pipeline.core.vault.records:Manifest",
    "repovault_pipeline.core.vault.records:Latest",
)
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"  # in a source checkout
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def record_models() -> list[type[BaseModel]]:
    """The models of RECORDS, in its order."""
    models = []
    for spec in RECORDS:
        module, name = spec.split(":")
        models.append(getattr(importlib.import_module(module), name))
    return models


def schema_name(model: type[BaseModel]) -> str:
    """`StatusEvent` -> `status-event.schema.json`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", model.__name__).lower() + ".schema.json"


def schema_text(model: type[BaseModel]) -> str:
    """The file's content: the model's schema, two-space indented, ending in a newline."""
    schema = {"$schema": DIALECT, **model.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write every schema into `folder`, and remove the schema files no record has any more."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for model in record_models():
        path = folder / schema_name(model)
        path.write_text(schema_text(model))
        written.append(path)
    for stale in set(folder.glob("*.schema.json")) - set(written):
        stale.unlink()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SCHEMAS_DIR)
    for path in write_schemas(parser.parse_args(argv).folder):
        print(path)


if __name__ == "__main__":
    main()
