"""Who may call `repovault serve` (issue 20, item 3), over HTTP to the served API: API tokens made
and revoked with the CLI (a subprocess, as an operator runs it), Keycloak access tokens checked
against a JWKS served on loopback, scopes, the submission limit per token, and the inputs that
gave a 500."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import select

from repovault_pipeline.core.access.oidc import scope_of
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.lineage.tables import api_tokens
from tests.support.api import make_token, serve_command, session
from tests.support.kafka import read_json
from tests.support.repos import ServedRepo
from tests.support.servers import serving

REPOVAULT = str(Path(sys.executable).with_name("repovault"))


def rows() -> list:
    return open_lineage(os.environ["REPOVAULT_DB_URL"]).find(limit=1000)


def repovault(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REPOVAULT, *args], capture_output=True, text=True, timeout=60, env=os.environ.copy()
    )


def one_line_refusal(answer: requests.Response, status: int, *said: str) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert "\n" not in error and all(s in error for s in said), error


def test_tokens_made_listed_and_revoked_with_the_cli(api: str, api_log: Path) -> None:
    made = repovault("token", "create", "--scope", "read", "--name", "dashboards")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"rvt_[A-Za-z0-9_-]{43}", token), made.stdout
    assert token not in made.stderr and "shown only now" in made.stderr

    # No token, a wrong one: 401 with one line and WWW-Authenticate; /healthz and the docs are open.
    bare = requests.get(f"{api}/api/requests", timeout=30)
    one_line_refusal(bare, 401, "Authorization: Bearer", "repovault token create")
    assert bare.headers["WWW-Authenticate"] == 'Bearer realm="repovault"'
    wrong = requests.get(
        f"{api}/api/requests", headers={"Authorization": f"Bearer {token[:-1]}x"}, timeout=30
    )
    one_line_refusal(wrong, 401, "unknown or revoked")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert requests.get(f"{api}/metrics", timeout=30).status_code == 401
    assert requests.get(f"{api}/healthz", timeout=30).status_code == 200
    assert requests.get(f"{api}/api/openapi.json", timeout=30).status_code == 200

    # A read token reads (the metrics too) and may not submit nor verify: 403, one line.
    with session(token) as reader:
        assert reader.get(f"{api}/api/requests", timeout=30).status_code == 200
        assert reader.get(f"{api}/metrics", timeout=30).status_code == 200
        refused = reader.post(f"{api}/api/requests", json={"urls": ["http://127.0.0.1/o/r"]})
        one_line_refusal(refused, 403, "needs the submit scope", "has read")
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        verify = reader.post(f"{api}/api/repositories/127.0.0.1/o/r/verify", timeout=30)
        one_line_refusal(verify, 403, "needs the admin scope")
    assert rows() == []

    listed = repovault("token", "list")
    assert listed.returncode == 0, listed.stderr
    [header, line] = listed.stdout.splitlines()
    assert header.split() == ["id", "name", "scope", "created", "last_used", "revoked"]
    token_id = line.split()[0]
    assert line.split()[1:3] == ["dashboards", "read"] and line.endswith(" -")  # used, live
    assert "Z" in line.split()[-2] and token not in listed.stdout

    revoked = repovault("token", "revoke", token_id)
    assert revoked.returncode == 0 and f"token {token_id} revoked" in revoked.stdout
    after = requests.get(
        f"{api}/api/requests", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    one_line_refusal(after, 401, "unknown or revoked")
    assert not repovault("token", "list").stdout.splitlines()[1].endswith(" -")
    unknown = repovault("token", "revoke", "nope")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1, unknown.stderr

    # Only the SHA-256 is kept; the token is in no log.
    with open_lineage(os.environ["REPOVAULT_DB_URL"]).engine.connect() as conn:
        stored = [dict(r._mapping) for r in conn.execute(select(api_tokens))]
    assert token not in json.dumps(stored, default=str) and len(stored[0]["token_hash"]) == 64
    assert token not in api_log.read_text()


# --- Keycloak access tokens against a JWKS on loopback ---------------------------------------

ISSUER = "http://keycloak.test/realms/repovault"
AUDIENCE = "repovault-api"


class Realm:
    """A Keycloak realm's signing key, and its JWKS served over HTTP on loopback."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": "realm-key", "use": "sig", "alg": "RS256"}]})
        self.fetches = 0
        realm = self

        class Keys(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                realm.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self.server.server_port}/protocol/openid-connect/certs"

    def token(
        self, roles: list[str], key: Any = None, kid: str = "realm-key", **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "6c1f0c9e",
            "preferred_username": "ci-bot",
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": roles},
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def realm() -> Iterator[Realm]:
    served = Realm()
    yield served
    served.server.shutdown()


@pytest.fixture
def oidc_api(
    vault_env: dict[str, str], private_lineage: str, realm: Realm, tmp_path: Path
) -> Iterator[str]:
    env = {
        "REPOVAULT_OIDC_ISSUER": ISSUER,
        "REPOVAULT_OIDC_JWKS_URL": realm.jwks_url,
        "REPOVAULT_OIDC_AUDIENCE": f"{AUDIENCE},another-api",
    }
    with serving(serve_command, tmp_path / "api.log", env) as port:
        yield f"http://127.0.0.1:{port}"


def test_keycloak_access_tokens_by_realm_role(
    oidc_api: str, realm: Realm, make_repo: Callable[..., ServedRepo], tmp_path: Path
) -> None:
    api = oidc_api
    repo = make_repo("by-jwt")
    submitter = realm.token(["offline_access", "repovault-submit"])
    with session(submitter) as http:
        made = http.post(f"{api}/api/requests", json={"urls": [repo.url]}, timeout=30)
        assert made.status_code == 202, made.text
        assert http.get(f"{api}/api/requests", timeout=30).status_code == 200
        one_line_refusal(
            http.post(f"{api}/api/repositories/127.0.0.1/o/r/verify", timeout=30),
            403,
            "needs the admin scope",
        )
    with session(realm.token(["repovault-read"])) as reader:
        assert reader.get(f"{api}/api/stats", timeout=30).status_code == 200
        one_line_refusal(
            reader.post(f"{api}/api/requests", json={"urls": [repo.url]}, timeout=30),
            403,
            "needs the submit scope",
        )

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "expired": (realm.token(["repovault-admin"], exp=int(time.time()) - 120), "expired"),
        "audience": (realm.token(["repovault-admin"], aud="account"), "not meant for this API"),
        "issuer": (
            realm.token(["repovault-admin"], iss="http://evil.test/realms/repovault"),
            "not issued by",
        ),
        "other key": (realm.token(["repovault-admin"], key=stranger), "not valid"),
        "unknown kid": (
            realm.token(["repovault-admin"], key=stranger, kid="rotated"),
            "a key the realm does not publish",
        ),
        "unsigned": (
            jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                None,
                algorithm="none",
                headers={"kid": "realm-key"},
            ),
            "not valid",
        ),
        "garbage": ("eyJhbGciOi.not-a.token", "not a readable JWT"),
    }
    for case, (token, said) in refused.items():
        answer = requests.get(
            f"{api}/api/requests", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert answer.status_code == 401, (case, answer.text)
        one_line_refusal(answer, 401, said)
    roleless = requests.get(
        f"{api}/api/requests",
        headers={"Authorization": f"Bearer {realm.token(['offline_access'])}"},
        timeout=30,
    )
    one_line_refusal(roleless, 403, "ci-bot holds none of the RepoVault roles", "repovault-viewer")
    assert realm.fetches <= 3  # the keys are cached; an unknown kid refetches once
    log = (tmp_path / "api.log").read_text()
    assert submitter not in log and submitter.split(".")[2] not in log


def test_viewers_read_and_operators_do_everything(
    oidc_api: str, realm: Realm, make_repo: Callable[..., ServedRepo]
) -> None:
    """The realm's two roles for people (docs/deployment.md, "Who may do what"): a viewer reads
    and may not submit nor check; an operator may do all three; a GitHub user the operators
    gave no role is refused with the roles to ask for."""
    api = oidc_api
    repo = make_repo("by-operator")
    viewer = realm.token(["default-roles-repovault", "repovault-viewer"], preferred_username="vi")
    with session(viewer) as http:
        for path in ("/api/requests", "/api/stats", "/api/repositories", "/metrics"):
            assert http.get(f"{api}{path}", timeout=30).status_code == 200, path
        submit = http.post(f"{api}/api/requests", json={"urls": [repo.url]}, timeout=30)
        one_line_refusal(submit, 403, "needs the submit scope", "has read")
        verify = http.post(f"{api}/api/repositories/127.0.0.1/o/r/verify", timeout=30)
        one_line_refusal(verify, 403, "needs the admin scope", "has read")
    assert rows() == []

    operator = realm.token(["repovault-operator"], preferred_username="op")
    with session(operator) as http:
        assert http.get(f"{api}/api/requests", timeout=30).status_code == 200
        made = http.post(f"{api}/api/requests", json={"urls": [repo.url]}, timeout=30)
        assert made.status_code == 202, made.text
        # Past the role check: refused only because nothing of it is stored yet.
        verify = http.post(f"{api}/api/repositories/127.0.0.1/o/r/verify", timeout=30)
        one_line_refusal(verify, 404, "no snapshot of 127.0.0.1/o/r is stored")
    [row] = rows()
    assert row.repo_url == repo.url

    newcomer = realm.token(["default-roles-repovault", "offline_access"], preferred_username="gh")
    refused = requests.get(
        f"{api}/api/requests", headers={"Authorization": f"Bearer {newcomer}"}, timeout=30
    )
    one_line_refusal(refused, 403, "gh holds none", "repovault-viewer or repovault-operator")
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("claims", "scope"),
    [
        ({"realm_access": {"roles": ["repovault-viewer"]}}, "read"),
        ({"realm_access": {"roles": ["repovault-viewer", "repovault-submit"]}}, "submit"),
        ({"realm_access": {"roles": ["repovault-read", "repovault-operator"]}}, "admin"),
        ({"realm_access": {"roles": ["offline_access", "repovault-viewers"]}}, None),
        ({"realm_access": {"roles": [["repovault-admin"], 7, None]}}, None),
        ({"realm_access": ["repovault-admin"]}, None),
        ({"realm_access": {"roles": {"repovault-admin": True}}}, None),
        ({"realm_access": {"roles": "repovault-admin"}}, None),
        ({"realm_access": None}, None),
        ({"roles": ["repovault-operator"]}, None),  # only the realm's own claim counts
    ],
)
def test_the_highest_scope_the_realm_roles_give(claims: dict[str, Any], scope: str | None) -> None:
    assert scope_of(claims) == scope


# --- the submission limit -----------------------------------------------------------------------


def test_submissions_per_token_are_limited(
    vault_env: dict[str, str],
    private_lineage: str,
    make_repo: Callable[..., ServedRepo],
    tmp_path: Path,
) -> None:
    urls = [make_repo(f"limited{n}").url for n in range(4)]
    first, second = make_token("submit", "first"), make_token("submit", "second")
    env = {"REPOVAULT_API_SUBMIT_PER_MINUTE": "3"}
    with serving(serve_command, tmp_path / "api.log", env) as port:
        api = f"http://127.0.0.1:{port}/api/requests"
        with session(first) as http:
            one_line_refusal(http.post(api, json={"urls": urls}, timeout=30), 413, "at most 3")
            assert http.post(api, json={"urls": urls[:2]}, timeout=30).status_code == 202
            over = http.post(api, json={"urls": urls[2:]}, timeout=30)
            one_line_refusal(over, 429, "3 URLs a minute", "nothing was requested")
            assert 1 <= int(over.headers["Retry-After"]) <= 40
            assert http.post(api, json={"urls": urls[2:3]}, timeout=30).status_code == 202
        with session(second) as other:  # a token of its own counts on its own
            assert other.post(api, json={"urls": urls[3:]}, timeout=30).status_code == 202
    assert len(rows()) == 4
    assert len(read_json(os.environ["REPOVAULT_TOPIC_PENDING"])) == 4


# --- inputs that gave a 500 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("post", "/api/requests", b'{"urls":' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nests"),
        ("post", "/api/requests", b'{"urls": ["http://127.0.0.1/o/r\\ud800"]}', "surrogate"),
        ("get", "/api/requests?offset=1e23", None, "offset: "),
        ("get", "/api/requests?offset=100000000000000000000000", None, "less than or equal"),
        ("get", "/api/requests?limit=-1", None, "limit: "),
        ("get", "/api/requests?limit=NaN", None, "limit: "),
        ("post", "/api/repositories/127.0.0.1/o/r/verify?snapshot=%ED%A0%80", None, "snapshot"),
    ],
    ids=[
        "400kB-nested",
        "lone-surrogate",
        "offset-1e23",
        "offset-huge",
        "limit-neg",
        "limit-nan",
        "snap",
    ],
)
def test_inputs_that_gave_a_500_get_a_400_with_a_reason(
    api: str, http: requests.Session, method: str, path: str, body: bytes | None, reason: str
) -> None:
    answer = http.request(
        method,
        f"{api}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    one_line_refusal(answer, 400, reason)
    assert rows() == []
