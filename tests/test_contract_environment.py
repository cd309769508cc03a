"""docs/contract.md's table of variables ("Environment") and the code agree: every variable
`Settings` or a resource reads has a row with the code's default, and every row's variable is
read by the code (or by the instance file `dagster.yaml`)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from dagster import ConfigurableResource

from repovault_pipeline.core.common.settings import RUN_TIMEOUT_GIT_TIMEOUTS, VARIABLES, Settings
from repovault_pipeline.definitions import repovault_resources
from repovault_pipeline.resources import variables

ROOT = Path(__file__).resolve().parents[1]


def _table() -> dict[str, str]:
    """The default cell of each variable of the table (a row may name several)."""
    section = (ROOT / "docs" / "contract.md").read_text().split("\n## Environment\n")[1]
    rows: dict[str, str] = {}
    for line in section.split("\n## ")[0].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("| `"):
            continue
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def _documented(field: str) -> str:
    """How the table writes the default of `field`: what its cell starts with."""
    defaults = Settings()
    value = getattr(defaults, field)
    if field == "run_timeout_s":
        times = "\N{MULTIPLICATION SIGN}"
        return f"{RUN_TIMEOUT_GIT_TIMEOUTS} {times} `REPOVAULT_GIT_TIMEOUT_S` ({value})"
    if field == "home":
        return "the checkout's `.repovault`"
    if isinstance(value, Path) and defaults.home in value.parents:
        return f"`REPOVAULT_HOME/{value.relative_to(defaults.home)}`"
    if isinstance(value, Path) and Path(tempfile.gettempdir()) in value.parents:
        return f"`$TMPDIR/{value.relative_to(tempfile.gettempdir())}`"
    if field == "db_url":
        return f"`{value.replace(str(defaults.home), 'REPOVAULT_HOME')}`"
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def test_every_setting_has_a_row_with_its_default() -> None:
    table = _table()
    wrong = {}
    for field in Settings.model_fields:
        name = Settings.variable(field)
        if not table.get(name, "").startswith(_documented(field)):
            wrong[name] = (table.get(name), _documented(field))
    assert wrong == {}


def test_every_row_is_read_by_the_code() -> None:
    read = set(VARIABLES)
    for resource in repovault_resources().values():
        if isinstance(resource, ConfigurableResource):
            read |= set(variables(type(resource)).values())
    instance_file = (ROOT / "dagster.yaml").read_text()
    unread = {name for name in _table() if name not in read and name not in instance_file}
    assert unread == set()
