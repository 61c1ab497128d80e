"""A minimal streaming file server: the reference ``bench/files.py --reference`` runs beside
Echora, to tell what any aiohttp proxy costs on this machine from what Echora adds.

    python bench/files_minimal.py --port P --storage local --root DIR
    python bench/files_minimal.py --port P --storage s3 --endpoint URL --bucket B  (AWS_* env)

It does only the job itself: ``PUT /f/{name}`` streams the body (SHA-256 on the way, as
Echora needs one) into one S3 multipart upload of ~8 MiB parts, one part buffered, or into
a file in 1 MiB writes in a thread and an fsync; ``GET /f/{name}`` streams the object back
(S3: ``iter_chunked(1 MiB)``; local: ``FileResponse``, i.e. sendfile). No auth, no database.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from aiohttp import web
from files_transfers import aio_config

PART_SIZE = 8 * 1024 * 1024
READ_SIZE = 1024 * 1024
S3: web.AppKey[Any] = web.AppKey("s3")
BUCKET = web.AppKey("bucket", str)
ENDPOINT = web.AppKey("endpoint", str)
ROOT = web.AppKey("root", Path)


async def s3_upload(request: web.Request) -> web.Response:
    s3, bucket = request.app[S3], request.app[BUCKET]
    key = f"minimal/{request.match_info['name']}"
    digest = hashlib.sha256()
    created = await s3.create_multipart_upload(Bucket=bucket, Key=key)
    upload_id = created["UploadId"]
    parts: list[dict[str, Any]] = []
    part = bytearray()

    async def send(data: bytes | bytearray) -> None:
        number = len(parts) + 1
        done = await s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        parts.append({"PartNumber": number, "ETag": done["ETag"]})

    async for chunk in request.content.iter_chunked(READ_SIZE):
        digest.update(chunk)
        part += chunk
        if len(part) >= PART_SIZE:  # parts may differ in size: no re-slicing
            await send(part)
            part = bytearray()
    if part or not parts:
        await send(part)
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    return web.json_response({"sha256": digest.hexdigest()}, status=201)


async def s3_download(request: web.Request) -> web.StreamResponse:
    s3, bucket = request.app[S3], request.app[BUCKET]
    found = await s3.get_object(Bucket=bucket, Key=f"minimal/{request.match_info['name']}")
    raw = found["Body"].raw_stream
    response = web.StreamResponse()
    response.content_length = int(found["ContentLength"])
    await response.prepare(request)
    try:
        async for chunk in raw.content.iter_chunked(READ_SIZE):
            await response.write(chunk)
    finally:
        raw.close()
    return response


async def local_upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    path = request.app[ROOT] / request.match_info["name"]
    with path.open("wb", buffering=0) as file:
        batch = bytearray()
        async for chunk in request.content.iter_chunked(READ_SIZE):
            digest.update(chunk)
            batch += chunk
            if len(batch) >= READ_SIZE:
                await asyncio.to_thread(file.write, batch)
                batch = bytearray()
        if batch:
            await asyncio.to_thread(file.write, batch)
        await asyncio.to_thread(os.fsync, file.fileno())
    return web.json_response({"sha256": digest.hexdigest()}, status=201)


async def local_download(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[ROOT] / request.match_info["name"])


async def s3_client(app: web.Application) -> AsyncIterator[None]:
    async with get_session().create_client(
        "s3",
        endpoint_url=app[ENDPOINT],
        region_name="us-east-1",
        config=aio_config(),
    ) as client:
        app[S3] = client
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage", choices=("s3", "local"), required=True)
    parser.add_argument("--root", type=Path, default=Path())
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--bucket", default="")
    args = parser.parse_args()
    app = web.Application()
    app[ROOT], app[BUCKET], app[ENDPOINT] = args.root, args.bucket, args.endpoint
    if args.storage == "s3":
        app.cleanup_ctx.append(s3_client)
        app.add_routes([web.put("/f/{name}", s3_upload), web.get("/f/{name}", s3_download)])
    else:
        args.root.mkdir(parents=True, exist_ok=True)
        app.add_routes([web.put("/f/{name}", local_upload), web.get("/f/{name}", local_download)])
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
