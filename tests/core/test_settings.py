"""Settings: each default written once, resource fields over the environment, secrets for the
masking rules read without judging the other variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repovault_pipeline.core.common.settings import ConfigError, Settings, configured_secrets


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


def test_every_default_path_is_under_repovault_home_whatever_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI called from another folder finds the vault `make run` keeps (issue 19, item 10)."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "vault home"
    settings = Settings.from_env({"REPOVAULT_HOME": str(home)})
    assert settings.home == home
    assert settings.local_store == home / "store"
    assert settings.db_url == f"sqlite:///{home}/lineage.db"
    assert settings.ssh_known_hosts == home / "ssh_known_hosts"
    assert settings.dagster_home == home / "dagster_home"
    # Unset: the checkout's .repovault (this test runs from a checkout), never the current folder.
    default = Settings.from_env({})
    assert default.home == Path(__file__).resolve().parents[2] / ".repovault"
    assert default.local_store.is_absolute() and default.home in default.local_store.parents
    # A variable of its own still wins over the home.
    assert Settings.from_env({"REPOVAULT_HOME": "h", "DAGSTER_HOME": "/d"}).dagster_home == Path(
        "/d"
    )


def test_secrets_are_read_even_when_another_variable_is_unusable() -> None:
    env = {
        "GITHUB_TOKEN": " ghp_x ",
        "GITLAB_TOKEN": "glpat-y",
        "BITBUCKET_APP_PASSWORD": "ATBB-z",
        "REPOVAULT_MAX_REPO_MB": "lots",
    }
    assert configured_secrets(env) == ("ghp_x", "", "glpat-y", "", "ATBB-z")
    with pytest.raises(ConfigError, match="REPOVAULT_MAX_REPO_MB"):
        Settings.from_env(env)


@pytest.mark.parametrize(("value", "delay"), [(None, 5), ("0", 0), ("7", 7)])
def test_the_retry_delay_is_what_the_loaded_ops_wait(value: str | None, delay: int) -> None:
    """REPOVAULT_RETRY_DELAY_S as a code location loading the definitions sees it."""
    env = {k: v for k, v in os.environ.items() if k != "REPOVAULT_RETRY_DELAY_S"}
    if value is not None:
        env["REPOVAULT_RETRY_DELAY_S"] = value
    probe = (
        "from repovault_pipeline.assets import archive as a\n"
        "ops = (a.clone_repo, a.upload_snapshot, a.record_lineage)\n"
        "print({op.retry_policy.delay for op in ops})"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str({delay})


def test_a_negative_retry_delay_is_refused() -> None:
    with pytest.raises(ConfigError, match="REPOVAULT_RETRY_DELAY_S=-1 is below 0"):
        Settings.from_env({"REPOVAULT_RETRY_DELAY_S": "-1"})
