"""The lean PutObject/GetObject path against SeaweedFS: what it sends, and that its failures
are the same StorageError / ObjectNotFound the aiobotocore path gives, with the same retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from support.faultproxy import FaultProxy
from support.seaweed import S3Server, direct_s3_client
from support.wiretap import HttpTap

from echora_server.config import Config
from echora_server.storage.base import ObjectNotFound, StorageError
from echora_server.storage.s3.lean import SigV4, signed_host
from echora_server.storage.s3.storage import S3Storage


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@contextlib.asynccontextmanager
async def tapped_storage(
    s3_config_values: dict[str, Any], tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[S3Storage, HttpTap]]:
    tap = HttpTap()
    endpoint = urlparse(s3_config_values["s3_endpoint_url"])
    assert endpoint.hostname is not None and endpoint.port is not None
    async with FaultProxy((endpoint.hostname, endpoint.port), tap=tap.connection) as proxy:
        config = Config(
            data_dir=tmp_path,
            **{**s3_config_values, "s3_endpoint_url": proxy.url, **settings},
        )
        storage = S3Storage(config)
        await storage.start()
        try:
            yield storage, tap
        finally:
            await storage.close()


def botocore_signed(
    credentials: Credentials,
    region: str,
    method: str,
    url: str,
    headers: dict[str, str],
    payload_hash: str,
    timestamp: str,
) -> dict[str, str]:
    """What botocore's S3 signer adds, at a given time (its steps, without its clock)."""
    request = AWSRequest(
        method=method, url=url, headers={**headers, "X-Amz-Content-SHA256": payload_hash}
    )
    request.context["timestamp"] = timestamp
    auth = S3SigV4Auth(credentials.get_frozen_credentials(), "s3", region)
    auth.payload = lambda _request: payload_hash  # type: ignore[method-assign]
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    auth._inject_signature_to_request(request, signature)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("endpoint", "headers", "token"),
    [
        ("http://127.0.0.1:8333", {"Content-Type": "image/png"}, None),
        ("http://127.0.0.1:80", {"Range": "bytes=10-19"}, None),
        ("https://S3.Example.com", {"Content-Type": "text/plain;  charset=utf-8 "}, "tok"),
        ("https://[::1]:9000/base", {}, None),
    ],
)
@pytest.mark.parametrize("timestamp", ["20261204T235959Z", "20261205T000000Z"])
def test_the_lean_signature_is_botocores(
    endpoint: str, headers: dict[str, str], token: str | None, timestamp: str
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    url = f"{endpoint}/my-bucket/echora/files/7/a%20b~c"
    payload_hash = hashlib.sha256(b"x").hexdigest()
    signer = SigV4("eu-west-3")
    for _ in range(2):  # the second from the kept signing key
        ours = signer.sign(
            credentials.get_frozen_credentials(),
            "PUT",
            signed_host(endpoint),
            urlparse(url).path,
            headers,
            payload_hash,
            timestamp,
        )
        theirs = botocore_signed(
            credentials, "eu-west-3", "PUT", url, headers, payload_hash, timestamp
        )
        assert {k.lower(): v for k, v in ours.items()} == {k.lower(): v for k, v in theirs.items()}


async def test_a_put_is_one_signed_request_the_store_verifies(
    s3_server: S3Server, s3_config_values: dict[str, Any], tmp_path: Path
) -> None:
    data = secrets.token_bytes(10_240)
    async with tapped_storage(s3_config_values, tmp_path) as (storage, tap):
        await storage.put_stream("files/1/a", one(data), content_type="image/png")
        (sent,) = tap.requests
        assert sent.method == "PUT" and "expect" not in sent.headers
        assert sent.headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
        assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
        # The digest the upload computed anyway is the one sent (SeaweedFS does not check
        # it against the body; AWS S3 refuses a mismatch with XAmzContentSHA256Mismatch).
        asked: list[bool] = []

        def digest() -> bytes:
            asked.append(True)
            return hashlib.sha256(data).digest()

        await storage.put_stream("files/1/b", one(data), content_type="x/y", sha256=digest)
        assert asked == [True]
        assert tap.requests[1].headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
        async with direct_s3_client(s3_server) as s3:
            prefix = s3_config_values["s3_prefix"]
            head = await s3.head_object(Bucket=s3_server.bucket, Key=f"{prefix}/files/1/a")
            assert head["ContentType"] == "image/png" and head["ContentLength"] == len(data)
            listed = await s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/")
            assert [o["Key"] for o in listed["Contents"]] == [
                f"{prefix}/files/1/a",
                f"{prefix}/files/1/b",
            ]


async def test_a_get_is_one_request_and_a_missing_key_is_object_not_found(
    s3_config_values: dict[str, Any], tmp_path: Path
) -> None:
    data = secrets.token_bytes(10_240)
    async with tapped_storage(s3_config_values, tmp_path) as (storage, tap):
        await storage.put_stream("files/1/a", one(data), content_type="x/y")
        mark = tap.mark()
        async with await storage.open("files/1/a", 10, 19) as reader:
            assert (reader.size, reader.length) == (len(data), 10)
            assert b"".join([c async for c in reader.chunks()]) == data[10:20]
        async with await storage.open("files/1/a") as reader:
            assert b"".join([c async for c in reader.chunks()]) == data
        assert [(r.method, r.headers.get("range")) for r in tap.since(mark)] == [
            ("GET", "bytes=10-19"),
            ("GET", None),
        ]
        with pytest.raises(ObjectNotFound):
            await storage.open("files/1/missing")
        assert not storage.availability.known_down  # the store answered


async def test_wrong_credentials_are_a_storage_error_not_retried(
    s3_config_values: dict[str, Any], tmp_path: Path
) -> None:
    async with tapped_storage(
        s3_config_values, tmp_path, s3_secret_access_key="not-the-secret"
    ) as (storage, tap):
        with pytest.raises(StorageError, match=r"SignatureDoesNotMatch|AccessDenied") as caught:
            await storage.put_stream("files/1/a", one(b"x" * 100), content_type="x/y")
        assert not isinstance(caught.value, ObjectNotFound)
        assert len(tap.requests) == 1
        assert storage.availability.known_down


@pytest.fixture
async def throttling_store() -> AsyncIterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 that answers every request as an overloaded S3 does."""
    seen: list[str] = []

    async def slow_down(request: web.Request) -> web.Response:
        seen.append(request.method)
        await request.read()
        body = "<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
        return web.Response(status=503, text=body, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow_down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()


async def test_throttling_is_retried_as_botocore_does_then_an_outage(
    throttling_store: tuple[str, list[str]], s3_config_values: dict[str, Any], tmp_path: Path
) -> None:
    url, seen = throttling_store
    config = Config(data_dir=tmp_path, **{**s3_config_values, "s3_endpoint_url": url})
    storage = S3Storage(config, max_attempts=3)
    await storage.start()
    try:
        with pytest.raises(StorageError, match="SlowDown"):
            await storage.open("files/1/a")
        assert seen == ["GET"] * 3
        assert storage.availability.known_down
    finally:
        await storage.close()
