"""Every setting is a resource field the Dagster UI shows by its variable's name, and a secret
only ever by that name: the repository snapshot the code location sends the UI is checked. The
settings a run gets are built from those fields."""

from __future__ import annotations

import re

import pytest
from dagster import Definitions
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.definitions import defs, repovault_resources
from repovault_pipeline.resources import (
    GitResource,
    SourcesResource,
    VaultResource,
    VaultS3Resource,
)

SECRETS = {
    "GITHUB_TOKEN": "ghp_secretvalue000000000000000000000000",
    "GITLAB_TOKEN": "glpat-secretvalue0000000",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value-0000",
    "REPOVAULT_SSH_KEY": "/keys/secret-ssh-key-path",
    "REPOVAULT_DECRYPT_IDENTITY": "/keys/secret-age-identity",
}


def _shown_variables(snap: RepositorySnap) -> set[str]:
    """The variable names the resource pages show: each field's description starts with one."""
    names = set()
    for resource in snap.resources or ():
        for field in resource.config_field_snaps:
            if match := re.match(r"([A-Z][A-Z0-9_]+) \(", field.description or ""):
                names.add(match[1])
    return names


def test_every_setting_is_a_resource_field_shown_by_its_variable() -> None:
    shown = _shown_variables(RepositorySnap.from_def(defs.get_repository_def()))
    wanted = {Settings.variable(field) for field in Settings.model_fields}
    assert wanted - shown == set()


def test_secrets_reach_the_ui_only_as_env_var_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    snap = RepositorySnap.from_def(
        Definitions(resources=repovault_resources()).get_repository_def()
    )
    serialized = serialize_value(snap)
    for name, value in SECRETS.items():
        assert value not in serialized, name
    configured = {
        getattr(value, "name", None)
        for resource in snap.resources or ()
        for value in resource.configured_values.values()
    }
    assert set(SECRETS) <= configured


def test_vault_settings_take_the_fields_of_the_resources_it_depends_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPOVAULT_MAX_REPO_MB", "900")
    monkeypatch.setenv("REPOVAULT_UPLOAD_WORKERS", "3")
    vault = VaultResource(
        s3=VaultS3Resource(region_name="eu-west-3"),
        git=GitResource(max_repo_mb="7"),
        sources=SourcesResource(keep_metadata="off"),
        bucket_prefix="field-",
    )
    with vault.process_config_and_initialize_cm() as initialized:
        settings = initialized.settings()
    assert (settings.max_repo_mb, settings.keep_metadata) == (7, "off")
    assert (settings.s3_region, settings.bucket_prefix) == ("eu-west-3", "field-")
    assert settings.upload_workers == 3  # a field left None: the environment's value
