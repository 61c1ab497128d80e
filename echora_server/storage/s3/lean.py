"""A lean path for the two requests small files make, one PutObject and one GetObject.

A 10 KiB file is mostly per-request overhead, and aiobotocore's (request model, handlers,
parsing, body hashing) cost the server several times what the transfer does. Here the
request is signed with SigV4 as botocore's S3 signer signs it (``SigV4``; the tests check
the two agree, and botocore's general machinery cost more than the signature itself), with
the client's credentials and the payload's SHA-256 already computed by the upload (a store
that checks it, as AWS S3 does, still verifies the bytes), and sent on a pooled aiohttp
session. Errors become
``ClientError`` as botocore would raise them, so ``errors.translate`` and every caller see
the same codes; retries, timeouts, proxies from the environment and the CA bundle follow
botocore's settings."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import os
import random
import re
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp.payload import Payload
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.utils import get_environ_proxies
from yarl import URL

from echora_server.storage.s3.errors import S3_ERRORS, is_transient

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
MAX_BACKOFF = 20.0
_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def signed_host(endpoint: str) -> str:
    """The Host a request to ``endpoint`` carries, as SigV4 signs it: lower case, no
    userinfo, the port only when it is not the scheme's default."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class SigV4:
    """AWS Signature Version 4 of a request without a query string, as botocore's
    ``S3SigV4Auth`` computes it (the path is signed as sent: S3 does not normalise it), the
    payload's hash given. The day's signing key is kept: four HMACs fewer per request."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self._region = region
        self._service = service
        self._scope_tail = f"{region}/{service}/aws4_request"
        self._key: tuple[str, str, bytes] | None = None  # (secret, day, signing key)

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == day:
            return cached[2]
        key = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
        for part in (self._region, self._service, "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        self._key = (secret, day, key)
        return key

    def sign(
        self,
        credentials: Any,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, str],
        payload_hash: str,
        timestamp: str | None = None,
    ) -> dict[str, str]:
        """``headers`` plus X-Amz-Date, X-Amz-Content-SHA256, a session token if any, and
        Authorization. ``credentials``: frozen (access_key, secret_key, token)."""
        stamp = timestamp or time.strftime(SIGV4_TIMESTAMP, time.gmtime())
        day = stamp[:8]
        signed = dict(headers)
        signed["X-Amz-Date"] = stamp
        if credentials.token:
            signed["X-Amz-Security-Token"] = credentials.token
        signed["X-Amz-Content-SHA256"] = payload_hash
        canonical = {name.lower(): " ".join(value.split()) for name, value in signed.items()}
        canonical.setdefault("host", host)
        names = sorted(canonical)
        signed_names = ";".join(names)
        request = "\n".join(
            (
                method,
                path,
                "",  # no query string
                "".join(f"{name}:{canonical[name]}\n" for name in names),
                signed_names,
                payload_hash,
            )
        )
        scope = f"{day}/{self._scope_tail}"
        to_sign = "\n".join(
            ("AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest())
        )
        key = self._signing_key(credentials.secret_key, day)
        signature = hmac.digest(key, to_sign.encode(), "sha256").hex()
        signed["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return signed


def client_error(status: int, body: bytes, operation: str) -> ClientError:
    """What botocore raises for an error answer: its code from the XML, else the status."""
    code = _ERROR_CODE.search(body)
    message = _ERROR_MESSAGE.search(body)
    error = {
        "Code": code.group(1).decode() if code else str(status),
        "Message": message.group(1).decode() if message else "",
    }
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def _ssl_context() -> ssl.SSLContext | None:
    bundle = os.environ.get("AWS_CA_BUNDLE")  # as botocore reads it
    return ssl.create_default_context(cafile=bundle) if bundle else None


class LeanS3:
    """``start`` in the storage's start, ``close`` in its close: the session is theirs."""

    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        region: str,
        *,
        max_attempts: int,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
    ) -> None:
        endpoint = s3_client.meta.endpoint_url.rstrip("/")
        self._base = f"{endpoint}/{quote(bucket, safe='')}/"  # path-style, as the client
        self._path_base = urlsplit(self._base).path
        self._host = signed_host(endpoint)
        self._signer = SigV4(region)
        # The client's own credentials object (refreshable ones refresh themselves).
        self._credentials = s3_client._request_signer._credentials
        self._max_attempts = max_attempts
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._max_connections = max_connections
        self._proxy = get_environ_proxies(endpoint).get(urlsplit(endpoint).scheme)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=_ssl_context() or True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
            # The store sets no cookie we would send back: none is looked up or kept.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def put(self, s3_key: str, body: Payload, content_type: str, sha256: bytes) -> None:
        headers = {"Content-Type": content_type}
        response = await self._send("PUT", s3_key, headers, sha256.hex(), body, "PutObject")
        response.release()

    async def get(self, s3_key: str, byte_range: str | None) -> aiohttp.ClientResponse:
        """The response, its body unread: the caller owns it (``close``)."""
        headers = {"Range": byte_range} if byte_range else {}
        return await self._send("GET", s3_key, headers, EMPTY_SHA256, None, "GetObject")

    async def _send(
        self,
        method: str,
        s3_key: str,
        headers: dict[str, str],
        payload_hash: str,
        body: Payload | None,
        operation: str,
    ) -> aiohttp.ClientResponse:
        if self._session is None:
            raise RuntimeError("LeanS3.start() was not awaited")
        quoted = quote(s3_key, safe="/~")
        url = URL(self._base + quoted, encoded=True)  # quoted once, here
        path = self._path_base + quoted
        attempt = 1
        while True:
            try:
                signed = await self._sign(method, path, headers, payload_hash)
                response = await self._session.request(
                    method, url, headers=signed, data=body, proxy=self._proxy
                )
                if response.status >= 300:
                    try:
                        raise client_error(response.status, await response.read(), operation)
                    finally:
                        response.release()
                return response
            except S3_ERRORS as exc:
                if attempt >= self._max_attempts or not is_transient(exc):
                    raise
            # As botocore's standard retry mode: full jitter, exponential, capped.
            await asyncio.sleep(random.random() * min(MAX_BACKOFF, 2.0 ** (attempt - 1)))
            attempt += 1

    async def _sign(
        self, method: str, path: str, headers: dict[str, str], payload_hash: str
    ) -> dict[str, str]:
        if self._credentials is None:
            raise NoCredentialsError()  # as the client raises for s3v4
        frozen = self._credentials.get_frozen_credentials()
        if inspect.isawaitable(frozen):
            frozen = await frozen
        return self._signer.sign(frozen, method, self._host, path, headers, payload_hash)
