"""What one small upload or download costs on the wire: PostgreSQL round trips and requests to
the store, counted by taps on real proxies in front of PostgreSQL and SeaweedFS.

Each counted request follows warm-up requests of the same kind, so asyncpg's statements are
prepared (a first use costs one more round trip per connection) and, unless the test turns
the cache off, the token is in the verified-token cache.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from support.people import People, Person
from support.tapped import ClientFactory, tapped_app
from support.wiretap import HttpRequest

SMALL = 10 * 1024


async def upload(person: Person, body: bytes) -> str:
    response = await person.request(
        "PUT", f"/api/upload?filename=note-{secrets.token_hex(4)}.bin", data=body
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["attachments"][0]["id"])


def only_data_requests(requests: list[HttpRequest]) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in requests]


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("cache_ttl", [5.0, 0.0])
async def test_one_part_upload(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    aiohttp_client: ClientFactory,
    backend: str,
    cache_ttl: float,
) -> None:
    async with tapped_app(
        database_url,
        tmp_path,
        aiohttp_client,
        s3=request if backend == "s3" else None,
        token_cache_ttl=cache_ttl,
    ) as (client, pg, store):
        alice = await People(client).create("alice")
        for _ in range(3):
            await upload(alice, secrets.token_bytes(SMALL))
        taken, _ = await pg.fewest_round_trips(lambda: upload(alice, secrets.token_bytes(SMALL)))
        # The target (membership) check and the INSERT that re-checks it; no BEGIN/COMMIT.
        # Without the cache the token's lookup comes first.
        assert taken == (2 if cache_ttl else 3)
        if backend == "s3":
            store_mark = store.mark()
            await upload(alice, secrets.token_bytes(SMALL))
            sent = store.since(store_mark)
            assert [r.method for r in sent] == ["PUT"], only_data_requests(sent)
            assert "uploadId" not in sent[0].target and "partNumber" not in sent[0].target
            assert "expect" not in sent[0].headers  # one round trip, not two
            assert sent[0].headers["x-amz-content-sha256"] not in ("UNSIGNED-PAYLOAD", "")


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_small_download_and_304(
    request: pytest.FixtureRequest,
    database_url: str,
    tmp_path: Path,
    aiohttp_client: ClientFactory,
    backend: str,
) -> None:
    async with tapped_app(
        database_url, tmp_path, aiohttp_client, s3=request if backend == "s3" else None
    ) as (
        client,
        pg,
        store,
    ):
        alice = await People(client).create("alice")
        body = secrets.token_bytes(SMALL)
        file_id = await upload(alice, body)
        path = f"/api/files/{file_id}/note.bin"
        for _ in range(3):
            assert (await alice.get(path)).status == 200
        taken, _ = await pg.fewest_round_trips(lambda: alice.get(path))
        assert taken == 1  # the attachment and my access, together
        store_mark = store.mark()
        response = await alice.get(path)
        assert response.status == 200 and await response.read() == body
        if backend == "s3":
            sent = store.since(store_mark)
            assert only_data_requests(sent) == [("GET", sent[0].path)], only_data_requests(sent)
            assert "range" not in sent[0].headers

        etag = response.headers["ETag"]
        taken, _ = await pg.fewest_round_trips(
            lambda: alice.get(path, headers={"If-None-Match": etag})
        )
        assert taken == 1
        store_mark = store.mark()
        cached = await alice.get(path, headers={"If-None-Match": etag})
        assert cached.status == 304
        assert store.since(store_mark) == []
