"""Settings: each default written once, resource fields over the environment, secrets for the
masking rules read without judging the other variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from repovault_pipeline.core.settings import ConfigError, Settings, configured_secrets


def test_an_empty_environment_gives_the_dataclass_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    blank = Settings.from_env({"REPOVAULT_TOPIC_PENDING": " ", "REPOVAULT_MAX_REPO_MB": ""})
    assert blank == Settings()


def test_the_run_timeout_follows_the_git_timeout_unless_set() -> None:
    assert Settings.from_env({"REPOVAULT_GIT_TIMEOUT_S": "10"}).run_timeout_s == 30
    both = {"REPOVAULT_GIT_TIMEOUT_S": "10", "REPOVAULT_RUN_TIMEOUT_S": "7"}
    assert Settings.from_env(both).run_timeout_s == 7


def test_overrides_win_over_the_environment_and_none_leaves_it() -> None:
    env = {"REPOVAULT_DB_URL": "sqlite:///env.db", "REPOVAULT_BUCKET_PREFIX": "env-"}
    settings = Settings.from_env(
        env, overrides={"REPOVAULT_DB_URL": "sqlite:///field.db", "REPOVAULT_BUCKET_PREFIX": None}
    )
    assert (settings.db_url, settings.bucket_prefix) == ("sqlite:///field.db", "env-")
    with pytest.raises(ConfigError, match="REPOVAULT_BUCKET_PREFIX='Bad_'"):
        Settings.from_env({}, overrides={"REPOVAULT_BUCKET_PREFIX": "Bad_"})


def test_region_from_aws_region_then_aws_default_region() -> None:
    assert Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-3"}).s3_region == "eu-west-3"
    both = {"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "eu-west-3"}
    assert Settings.from_env(both).s3_region == "eu-north-1"
    assert Settings.from_env({}).local_store == Path(".repovault/store")


def test_secrets_are_read_even_when_another_variable_is_unusable() -> None:
    env = {"GITHUB_TOKEN": " ghp_x ", "GITLAB_TOKEN": "glpat-y", "REPOVAULT_MAX_REPO_MB": "lots"}
    assert configured_secrets(env) == ("ghp_x", "", "glpat-y")
    with pytest.raises(ConfigError, match="REPOVAULT_MAX_REPO_MB"):
        Settings.from_env(env)
