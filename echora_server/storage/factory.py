"""The storage backend the configuration selects, opened and closed with the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from echora_server.config import CONFIG, Config
from echora_server.storage.base import Storage
from echora_server.storage.local.storage import LocalStorage
from echora_server.storage.s3.storage import S3Storage


def create_storage(config: Config) -> Storage:
    if config.effective_storage == "s3":
        return S3Storage(config)
    return LocalStorage(config.files_dir, timeout=config.storage_timeout)


STORAGE = web.AppKey("storage", Storage)


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = create_storage(app[CONFIG])
    await storage.start()
    app[STORAGE] = storage
    try:
        yield
    finally:
        await storage.close()
