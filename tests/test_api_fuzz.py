"""Schemathesis against the served API's own OpenAPI document (issue 20, item 3): generated calls
of every operation, over HTTP with an admin token, a bounded number per operation. No answer may
be a 500, and every answer must be one the document describes (status, content type, headers,
body schema); a call without the token must be refused."""

from __future__ import annotations

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 15  # per operation: the whole test stays within seconds
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]


def test_generated_calls_find_no_500_and_no_schema_violation(
    api: str, http: requests.Session
) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=api, session=http, checks=CHECKS)

        call()
