"""`repovault token create|list|revoke`: the HTTP API's tokens, made and revoked here because
the API itself never hands one out."""

from __future__ import annotations

import argparse
import sys

from ..core.access.tokens import SCOPES, TokenStore
from ..core.common.settings import Settings
from .common import BadInput, Subparsers, existing_lineage, lineage_store
from .output import table, ts


def register(sub: Subparsers) -> None:
    token = sub.add_parser("token", help="the HTTP API's tokens: create, list, revoke")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="a new token, printed once")
    create.add_argument(
        "--scope",
        required=True,
        choices=SCOPES,
        help="read: GET routes and /metrics; submit: also POST /api/requests; admin: also "
        "POST .../verify",
    )
    create.add_argument("--name", help="who or what uses it (shown by `token list`)")
    create.set_defaults(handler=cmd_token_create)
    token_sub.add_parser(
        "list", help="tokens, their scope and use; never the secrets"
    ).set_defaults(handler=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("token_id", metavar="ID")
    revoke.set_defaults(handler=cmd_token_revoke)


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    """A new API token: printed once on stdout, kept only as its SHA-256."""
    try:
        row, token = TokenStore(lineage_store(settings).engine).create(args.scope, args.name)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    print(token)
    print(
        f"token {row.token_id} ({row.scope}{f', {row.name}' if row.name else ''}) created; "
        "it is shown only now: keep it where your scripts read secrets",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    """The API tokens, never their secrets."""
    rows = TokenStore(existing_lineage(settings).engine).list()
    if not rows:
        print("no API tokens; make one with `repovault token create --scope read`")
        return 0
    table(
        ["id", "name", "scope", "created", "last_used", "revoked"],
        [
            [
                t.token_id,
                t.name or "-",
                t.scope,
                ts(t.created_at),
                ts(t.last_used_at),
                ts(t.revoked_at),
            ]
            for t in rows
        ],
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a token: the API refuses it from the next call on."""
    token = TokenStore(existing_lineage(settings).engine).revoke(args.token_id)
    if token is None:
        raise BadInput(f"no token {args.token_id[:40]!r}; `repovault token list` shows the ids")
    print(f"token {token.token_id} revoked at {ts(token.revoked_at)}")
    return 0
