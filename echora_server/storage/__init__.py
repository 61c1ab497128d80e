"""File storage: one interface (``base.Storage``), a local-disk and an S3 backend."""

from __future__ import annotations

from echora_server.config import Config
from echora_server.storage.base import (
    DEFAULT_CHUNK_SIZE,
    FileRegion,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    ObjectReader,
    ObjectTooLarge,
    PendingUpload,
    SocketBody,
    Storage,
    StorageError,
    StoredObject,
    check_key,
    new_key,
)
from echora_server.storage.local.storage import LocalStorage
from echora_server.storage.s3.storage import S3Storage

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FileRegion",
    "InvalidRange",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectReader",
    "ObjectTooLarge",
    "PendingUpload",
    "S3Storage",
    "SocketBody",
    "Storage",
    "StorageError",
    "StoredObject",
    "check_key",
    "create_storage",
    "new_key",
]


def create_storage(config: Config) -> Storage:
    """The backend the configuration selects; it does no I/O until ``start()``."""
    if config.effective_storage == "s3":
        return S3Storage(config)
    return LocalStorage(config.files_dir)
