"""One partition per archived repository; the key is its `repo_id`."""

from dagster import DynamicPartitionsDefinition

REPOSITORIES = "repositories"
repositories = DynamicPartitionsDefinition(name=REPOSITORIES)
