# One image for the Dagster webserver, daemon and code server and for `repovault` commands
# (docker-compose.yml). Build: docker compose build  (or docker build -t repovault:0.1.0 .)
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git clones and bundles the repositories, git-lfs fetches their LFS objects; openssh-client
# serves ssh:// clones; socat is the one-way relay from the webserver to the code server
# (docker-compose.yml, dagster-code-relay).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git git-lfs openssh-client socat ca-certificates age \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 repovault \
    && useradd --system --uid 10001 --gid repovault --create-home --home-dir /home/repovault \
       --shell /usr/sbin/nologin repovault

# Exactly the runtime lock (requirements/runtime.txt: every package pinned, with hashes, the
# same versions as the test suite's requirements/dev.txt), then the package and its console
# script `repovault`, built by the locked setuptools with nothing fetched beside the lock.
WORKDIR /opt/repovault/src
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY setup.py pyproject.toml ./
COPY repovault_pipeline ./repovault_pipeline
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf /opt/repovault/src

# DAGSTER_HOME holds the production instance (dagster.yaml: PostgreSQL storage, queued runs);
# storage/ (compute logs) is a volume shared by the three Dagster services.
ENV DAGSTER_HOME=/opt/dagster/home
COPY dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/dagster/workspace.yaml /opt/dagster/app/workspace.yaml
RUN mkdir -p ${DAGSTER_HOME}/storage /var/lib/repovault/work /var/lib/repovault/store \
       /var/lib/repovault/ssh \
    && chown repovault:repovault ${DAGSTER_HOME} \
    && chown -R repovault:repovault ${DAGSTER_HOME}/storage /var/lib/repovault

USER repovault
WORKDIR /opt/dagster/app
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "repovault_pipeline.definitions", "--location-name", "repovault"]
