"""Plain-Python core of RepoVault: no Dagster import anywhere below this package."""
