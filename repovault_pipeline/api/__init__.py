"""`repovault serve`: the HTTP API for systems and people that should not need Kafka or the
Dagster UI. Requests take the same validation and Kafka path as `repovault submit`
(`core.submit`); everything else reads the lineage tables and the store. OpenAPI at /api/docs.

Laid out as FastAPI's "bigger applications": `app` assembles, `deps` holds what handlers
share (the vault, the caller and their scope, the submission limit), `errors` the one shape of
a refusal, `models` every body and answer, `routers/` the routes by domain.
"""

from .app import create_app

__all__ = ["create_app"]
