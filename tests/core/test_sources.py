"""`sources_tick` against the forge API server and PostgreSQL: first runs in batches along a
cursor, incomplete listings never taken for the whole truth; the same for every forge's shape."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from repovault_pipeline.core.common.settings import Settings
from repovault_pipeline.core.lineage.requests import open_lineage
from repovault_pipeline.core.sources.discover import sources_tick
from repovault_pipeline.core.sources.fleet import FleetStore
from repovault_pipeline.core.sources.forges.listing import SourceLister, parse_source
from tests.support.forge_api import forge_api
from tests.support.repos import ServedRepo

AT = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "api_variable", "api_path"),
    [
        ("github:org", "REPOVAULT_GITHUB_API", ""),
        ("gitea:org", "REPOVAULT_GITEA_API", "/api/v1"),
        ("bitbucket:workspace", "REPOVAULT_BITBUCKET_API", "/2.0"),
    ],
)
def test_first_runs_in_batches_and_missing_from_an_incomplete_listing_is_not_gone(
    spec: str,
    api_variable: str,
    api_path: str,
    private_lineage: str,
    monkeypatch: pytest.MonkeyPatch,
    git_base_url: str,
    make_repo: Callable[..., ServedRepo],
) -> None:
    fleet = FleetStore(open_lineage(private_lineage).engine)
    with forge_api(git_base_url) as api:
        for i in range(5):
            api.add("bigorg", f"r{i}")
        monkeypatch.setenv(api_variable, api.url + api_path)
        settings = Settings.from_env()
        client = SourceLister(settings, retries=0)
        fleet.add_source(parse_source(f"{spec}/bigorg", settings), AT, {"wiki": False})

        tick = sources_tick(settings, fleet, AT, "", client, batch=2)
        assert tick.listings[0].complete and len(tick.new_repos) == 5
        keys = [r.run_key for r in tick.first_runs]
        cursor = tick.cursor
        while cursor:
            tick = sources_tick(settings, fleet, AT, cursor, client, batch=2)
            assert tick.listings == []  # listed once a day
            keys += [r.run_key for r in tick.first_runs]
            cursor = tick.cursor
        assert keys == sorted(
            f"track:127.0.0.1:{git_base_url.rsplit(':', 1)[1]}/bigorg/r{i}" for i in range(5)
        )
        assert {r.tags["repovault/source"] for r in tick.first_runs} == {"track"}
        # The source's choice travels with its first runs.
        assert {r.tags["repovault/keep"] for r in tick.first_runs} == {'{"wiki": false}'}

        # A 500 in the middle of the next listing: nothing is marked gone, the source shows why.
        api.remove("bigorg/r4")
        api.fail_page["bigorg"] = 2
        later = AT + timedelta(days=1, minutes=1)
        tick = sources_tick(settings, fleet, later, "", client)
        assert not tick.listings[0].complete and tick.gone == []
        [row] = fleet.sources()
        assert row.status == "error" and "HTTP 500 at page 2" in row.error and row.repos == 5
        assert {s.upstream for s in fleet.of_source(row.source.source_id)} == {"active"}
