"""Repository identity (docs/contract.md, "Repository identity"): which inputs are accepted,
and their `repo_id`.

Every entry point (CLI, Kafka injector, trending schedule, a run itself) validates with
`parse_repo_url`, so a URL that is refused is refused everywhere with the same one-line reason.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from repovault_pipeline.core.common.redact import mask_secrets

MAX_INPUT_LENGTH = 512
MAX_BUCKET_NAME = 63
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22}
# Hosts that serve exactly owner/name (a Bitbucket workspace/slug, a Codeberg owner/name);
# every other host may nest groups (GitLab style).
FLAT_HOSTS = {"github.com", "bitbucket.org", "codeberg.org"}

_SEGMENT = re.compile(r"^[A-Za-z0-9_.~-]+$")
_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9_.-]+)@(?P<host>[^:/\s]+):(?P<path>[^/].*)$")
# `user:password@host:path` or `user:password@host/path`: scp-like or scheme-less userinfo.
_SCHEMELESS_CREDENTIALS = re.compile(r"^[^/@:]*:[^@]*@")
_SHORTHAND = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_TRANSPORT_HELPER = re.compile(r"^[A-Za-z0-9+.-]+::")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_CREDENTIALS_REASON = (
    "the URL carries credentials; remove them from the URL and set GITHUB_TOKEN "
    "(or REPOVAULT_SSH_KEY for ssh) instead"
)


class InvalidRepoUrl(ValueError):
    """An input that cannot be archived; `str()` is the one-line reason, secrets masked."""


@dataclass(frozen=True)
class RepoRef:
    """A validated repository: where to clone it from and what to call it."""

    repo_id: str
    url: str
    scheme: str
    host: str
    port: int | None
    path: tuple[str, ...]

    @property
    def owner(self) -> str:
        return "/".join(self.path[:-1])

    @property
    def name(self) -> str:
        return self.path[-1]


def wiki_ref(ref: RepoRef) -> RepoRef:
    """The repository's wiki as GitHub and GitLab serve it, `<repo>.wiki.git` beside it; it
    keeps the repository's `repo_id` (its snapshots live in the repository's bucket)."""
    base = ref.url.removesuffix(".git")
    return replace(ref, url=f"{base}.wiki.git", path=(*ref.path[:-1], f"{ref.name}.wiki"))


def parse_repo_url(
    raw: str,
    allowed_schemes: tuple[str, ...] = ("https", "ssh"),
    allowed_hosts: tuple[str, ...] = ("github.com",),
) -> RepoRef:
    """Validate `raw` and return its `RepoRef`, or raise `InvalidRepoUrl` with one clear reason."""
    if not isinstance(raw, str):
        raise InvalidRepoUrl("the repository URL must be text")
    text = raw.strip()
    _check_text(text)
    url = _split(text)
    _check_access(url, allowed_schemes, allowed_hosts)
    segments = _path_segments(url.path)
    if url.host in FLAT_HOSTS and len(segments) != 2:
        raise InvalidRepoUrl(
            f"{url.host} repositories are owner/name; {_echo('/'.join(segments))!r} is not"
        )
    return _ref(url, segments)


@dataclass(frozen=True)
class _Url:
    """An input split into the parts a repository URL is judged by."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    path: str
    has_query: bool = False


def _check_text(text: str) -> None:
    """Refuse what is no remote URL before reading it as one: empty, overlong, a git option, a
    transport helper, a local path, whitespace or control characters."""
    if not text:
        raise InvalidRepoUrl("empty repository URL: give https://host/owner/name or owner/name")
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidRepoUrl(
            f"input is {len(text)} characters long; a repository URL has at most {MAX_INPUT_LENGTH}"
        )
    if text.startswith("-"):
        raise InvalidRepoUrl(
            f"{_echo(text)!r} starts with '-' and would be read as a git option; give a URL"
        )
    if _TRANSPORT_HELPER.match(text):
        raise InvalidRepoUrl(
            "git transport helpers (ext::, fd::, ...) are not allowed; give an https or ssh URL"
        )
    if _is_local(text):
        raise InvalidRepoUrl("local paths and file:// URLs are not allowed; give a remote URL")
    if _CONTROL.search(text) or any(c.isspace() for c in text):
        raise InvalidRepoUrl("the URL contains whitespace or control characters; remove them")


def _is_local(text: str) -> bool:
    """A file: URL, or a POSIX, home-relative or Windows path."""
    return (
        text.lower().startswith("file:")
        or text.startswith(("/", ".", "~", "\\"))
        or re.match(r"^[A-Za-z]:[\\/]", text) is not None
    )


def _split(text: str) -> _Url:
    """The parts of a scheme URL, an scp-like `user@host:path` or a GitHub `owner/name`."""
    if "://" in text:
        return _split_url(text)
    if _SCHEMELESS_CREDENTIALS.match(text):
        raise InvalidRepoUrl(_CREDENTIALS_REASON)
    if match := _SCP_LIKE.match(text):
        return _Url("ssh", match["user"], None, match["host"].lower(), None, match["path"])
    if _SHORTHAND.match(text):
        return _Url("https", None, None, "github.com", None, text)
    raise InvalidRepoUrl(
        f"{_echo(text)!r} is not a repository URL; give https://host/owner/name, "
        "git@host:owner/name.git or owner/name"
    )


def _check_access(
    url: _Url, allowed_schemes: tuple[str, ...], allowed_hosts: tuple[str, ...]
) -> None:
    """Refuse a scheme or host the settings do not allow, credentials, a query or fragment."""
    if url.scheme not in allowed_schemes:
        raise InvalidRepoUrl(
            f"scheme {url.scheme!r} is not allowed "
            f"(REPOVAULT_ALLOWED_SCHEMES={','.join(allowed_schemes)})"
        )
    if url.password is not None or (url.user is not None and url.scheme != "ssh"):
        raise InvalidRepoUrl(_CREDENTIALS_REASON)
    if url.has_query:
        raise InvalidRepoUrl("query strings and fragments are not allowed in a repository URL")
    if not _HOST.match(url.host):
        raise InvalidRepoUrl(f"{_echo(url.host)!r} is not a valid host name")
    if not host_allowed(url.host, url.port or DEFAULT_PORTS.get(url.scheme), allowed_hosts):
        named = url.host if url.port is None else f"{url.host}:{url.port}"
        raise InvalidRepoUrl(
            f"host {named!r} is not allowed (REPOVAULT_ALLOWED_HOSTS={','.join(allowed_hosts)})"
        )


def _ref(url: _Url, segments: tuple[str, ...]) -> RepoRef:
    """The accepted URL in its one clone form (default port dropped, `.git` kept or added for
    ssh, `git@` for ssh without a user) and its `repo_id`."""
    port = None if url.port == DEFAULT_PORTS.get(url.scheme) else url.port
    netloc = url.host if port is None else f"{url.host}:{port}"
    clone_path = "/".join(segments)
    if url.path.rstrip("/").endswith(".git") or url.scheme == "ssh":
        clone_path += ".git"
    user_part = f"{url.user or 'git'}@" if url.scheme == "ssh" else ""
    repo_id = f"{netloc}/{'/'.join(segments)}".lower()
    return RepoRef(
        repo_id=repo_id,
        url=f"{url.scheme}://{user_part}{netloc}/{clone_path}",
        scheme=url.scheme,
        host=url.host,
        port=port,
        path=segments,
    )


def host_allowed(host: str, port: int | None, allowed_hosts: tuple[str, ...]) -> bool:
    """`REPOVAULT_ALLOWED_HOSTS` entries: `host` allows every port of it, `host:port` only that
    port (`port` is the URL's port, or its scheme's default)."""
    return host in allowed_hosts or (port is not None and f"{host}:{port}" in allowed_hosts)


# API hosts that serve another web host: the one clone URLs (and credentials for them) name.
API_WEB_HOSTS = {"api.github.com": "github.com", "api.bitbucket.org": "bitbucket.org"}


def web_origin(api_url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of the web host a forge API belongs to: the only place that forge's
    credentials may be sent by git. `https://api.github.com` -> github.com,
    `https://api.bitbucket.org/2.0` -> bitbucket.org; any other API (GitHub Enterprise Server's
    `https://HOST/api/v3`, GitLab's, Gitea's `https://HOST/api/v1`, a local stand-in) -> its own
    scheme://host[:port]. The port is None when it is the scheme's default."""
    try:
        parts = urlsplit(api_url.strip())
        port = parts.port
    except ValueError:  # not a URL: the token goes nowhere
        return "", "", None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    host = API_WEB_HOSTS.get(host, host)
    return scheme, host, None if port == DEFAULT_PORTS.get(scheme) else port


def parse_repo_id(repo_id: str, allowed_hosts: tuple[str, ...] | None = None) -> RepoRef:
    """Turn a `repo_id` (a partition key) into a `RepoRef` cloned over https."""
    text = repo_id.strip()
    host = text.split("/", 1)[0].split(":", 1)[0].lower()
    return parse_repo_url(f"https://{text}.git", ("https",), allowed_hosts or (host,))


def bucket_name(repo_id: str, prefix: str = "repo-") -> str:
    """Deterministic, valid, distinct S3 bucket name: prefix + readable slug + 8 hex of a hash."""
    digest = hashlib.sha256(repo_id.encode()).hexdigest()[:8]
    owner_and_name = repo_id.split("/", 1)[1] if "/" in repo_id else repo_id
    slug = re.sub(r"[^a-z0-9]+", "-", owner_and_name.lower()).strip("-")
    room = MAX_BUCKET_NAME - len(prefix) - len(digest) - 1
    slug = slug[:room].strip("-") or "repo"
    return f"{prefix}{slug}-{digest}"


def _split_url(text: str) -> _Url:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidRepoUrl(f"{_echo(text)!r} is not a valid URL ({exc})") from None
    return _Url(
        scheme=parts.scheme.lower(),
        user=parts.username,
        password=parts.password,
        host=(parts.hostname or "").lower(),
        port=port,
        path=parts.path,
        has_query=bool(parts.query or parts.fragment or "?" in text or "#" in text),
    )


def _path_segments(path: str) -> tuple[str, ...]:
    stripped = path.strip("/")
    if stripped.endswith(".git"):
        stripped = stripped[: -len(".git")]
    segments = tuple(stripped.split("/")) if stripped else ()
    if any(seg in (".", "..") for seg in segments):
        raise InvalidRepoUrl("'.' and '..' path segments are not allowed in a repository URL")
    if "%" in path:
        raise InvalidRepoUrl("percent-encoded characters are not allowed in a repository URL")
    if len(segments) < 2 or any(not seg for seg in segments):
        raise InvalidRepoUrl(f"{_echo(path)!r} does not name a repository; give /owner/name")
    for seg in segments:
        if not _SEGMENT.match(seg) or seg.startswith("-"):
            raise InvalidRepoUrl(f"{_echo(seg)!r} is not a valid owner or repository name")
    return segments


def _echo(text: str, limit: int = 80) -> str:
    """A rejected input as it may be echoed: credentials masked, length bounded."""
    masked = mask_secrets(text)
    return masked if len(masked) <= limit else masked[:limit] + "..."
