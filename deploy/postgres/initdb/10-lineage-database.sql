-- Runs once, when the postgres service initialises an empty data volume (POSTGRES_DB=dagster
-- is created by the image). The lineage table `repo_requests` lives in its own database, owned
-- by the same user; `repovault init` creates the table.
CREATE DATABASE repovault;
