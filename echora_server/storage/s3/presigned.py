"""Presigned uploads straight to the store.

A POST is a browser form, its policy pinning the key, the content type and the exact length.
Stores differ in how they keep a policy (SeaweedFS checks the length only after the whole
body, and answers 307 instead of 403), so one probe at start says whether this store refuses
what breaks the policy; finalize checks every object anyway.

A PUT is for a client that declared the file's SHA-256 (an agent, curl): the URL signs the
key, the content type and ``x-amz-checksum-sha256``, so the store refuses any other bytes and
keeps the digest it verified, which finalize reads back instead of the whole object. Stores
form uploads less quickly than plain PUTs (SeaweedFS: about 0.77x), so this is the faster way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from yarl import URL

from echora_server.storage.base import PresignedPost, PresignedPut

log = structlog.get_logger("echora.storage")

# Under the swept prefix, so a probe object whose delete failed is removed as an orphan.
PROBE_KEY = "files/0/probes/"


async def presign_post(
    client: Any,
    bucket: str,
    s3_key: str,
    *,
    content_type: str,
    size: int,
    expires_in: int,
    public_url: str | None,
) -> PresignedPost:
    conditions: list[Any] = [
        {"Content-Type": content_type},
        ["content-length-range", size, size],
    ]
    post = await client.generate_presigned_post(
        Bucket=bucket,
        Key=s3_key,
        Fields={"Content-Type": content_type},
        Conditions=conditions,
        ExpiresIn=expires_in,
    )
    url = str(post["url"])
    if public_url:  # the policy's signature covers no host: clients may reach another name
        url = str(URL(public_url).join(URL(URL(url).path.lstrip("/"))))
    return PresignedPost(url, {k: str(v) for k, v in post["fields"].items()})


async def presign_put(
    client: Any, bucket: str, s3_key: str, *, content_type: str, sha256: bytes, expires_in: int
) -> PresignedPut:
    checksum = base64.b64encode(sha256).decode()
    url = await client.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": bucket,
            "Key": s3_key,
            "ContentType": content_type,
            "ChecksumSHA256": checksum,
        },
        ExpiresIn=expires_in,
    )
    return PresignedPut(str(url), {"Content-Type": content_type, "x-amz-checksum-sha256": checksum})


async def stored_sha256(client: Any, bucket: str, s3_key: str) -> bytes | None:
    """The SHA-256 the store verified when the object was written, if it keeps one."""
    head = await client.head_object(Bucket=bucket, Key=s3_key, ChecksumMode="ENABLED")
    value = head.get("ChecksumSHA256")
    if not value or "-" in value:  # "-N": a digest of part digests, not of the bytes
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return decoded if len(decoded) == 32 else None


def origin_of(url: str) -> str:
    """scheme://host[:port] of an absolute URL, the way browsers write an origin."""
    return str(URL(url).origin())


async def _send(session: aiohttp.ClientSession, post: PresignedPost, body: bytes) -> int:
    form = aiohttp.FormData()
    for name, value in post.fields.items():
        form.add_field(name, value)
    form.add_field("file", body, filename="probe", content_type=post.fields["Content-Type"])
    async with session.post(post.url, data=form, allow_redirects=False) as response:
        await response.read()
        return response.status


async def probe_post_policy(client: Any, bucket: str, prefix: str, seconds: float) -> str | None:
    """None when the store keeps POST policies (takes a conforming form, refuses a longer
    body); else what it did instead. Leaves nothing behind."""
    async with _probe_object(client, bucket, prefix) as key:
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=seconds)
            ) as session:
                post = await presign_post(
                    client,
                    bucket,
                    key,
                    content_type="text/plain",
                    size=4,
                    expires_in=60,
                    public_url=None,
                )
                status = await _send(session, post, b"12345")
                if 200 <= status < 300:
                    return f"took a body longer than its policy allows ({status})"
                status = await _send(session, post, b"1234")
                if not 200 <= status < 300:
                    return f"refused a form that keeps its policy ({status})"
                head = await client.head_object(Bucket=bucket, Key=key)
                if int(head["ContentLength"]) != 4:
                    return "stored another size than it was sent"
                return None
        except Exception as exc:
            return f"failed: {type(exc).__name__}: {exc}"


async def probe_checksum_put(client: Any, bucket: str, prefix: str, seconds: float) -> str | None:
    """None when the store keeps checksums on presigned PUTs: it refuses bytes that do not
    match the signed digest and tells the digest of what it took. Else what it did instead.
    Leaves nothing behind."""
    body = b"1234"
    async with _probe_object(client, bucket, prefix) as key:
        try:
            put = await presign_put(
                client,
                bucket,
                key,
                content_type="text/plain",
                sha256=hashlib.sha256(body).digest(),
                expires_in=60,
            )
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=seconds)
            ) as session:
                for sent in (b"1235", body):
                    async with session.put(
                        put.url, data=sent, headers=put.headers, allow_redirects=False
                    ) as response:
                        await response.read()
                        status = response.status
                    if sent != body and 200 <= status < 300:
                        return f"took bytes that do not match their signed SHA-256 ({status})"
                    if sent == body and not 200 <= status < 300:
                        return f"refused a PUT that matches its signed SHA-256 ({status})"
            if await stored_sha256(client, bucket, key) != hashlib.sha256(body).digest():
                return "does not tell the SHA-256 it verified"
            return None
        except Exception as exc:
            return f"failed: {type(exc).__name__}: {exc}"


@contextlib.asynccontextmanager
async def _probe_object(client: Any, bucket: str, prefix: str) -> AsyncIterator[str]:
    """A fresh key for a probe, under the swept prefix; deleted afterwards, whatever
    happened (a delete that fails leaves it to the orphan sweep)."""
    key = f"{prefix}{PROBE_KEY}{secrets.token_urlsafe(12)}"
    try:
        yield key
    finally:
        try:
            await client.delete_object(Bucket=bucket, Key=key)
        except Exception:
            log.warning("probe_not_deleted", key=key, exc_info=True)
