"""Image dimensions and thumbnails (PNG, JPEG, GIF, WebP), each parsed by the plugin of its
DETECTED format, never ``Image.open`` (which tries every decoder). Sources over the byte or pixel
budget (a decompression bomb, seen in the header) or that fail to decode get no thumbnail."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import structlog
from PIL import (
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from echora_server.storage.base import Storage, StorageError

log = structlog.get_logger("echora.images")

THUMBNAIL_MAX_SIDE = 400
THUMBNAIL_TYPE = "image/webp"
THUMBNAIL_QUALITY = 80
THUMBNAIL_MAX_PIXELS = 25_000_000  # a 6000 x 4000 photo; ~100 MB decoded as RGBA
THUMBNAIL_MAX_SOURCE_BYTES = 20 * 1024 * 1024
THUMBNAIL_SLOTS = 2
_EXIF_ORIENTATION = 0x0112

_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "image/png": PngImagePlugin.PngImageFile,
    "image/apng": PngImagePlugin.PngImageFile,
    "image/jpeg": JpegImagePlugin.JpegImageFile,
    "image/gif": GifImagePlugin.GifImageFile,
    "image/webp": WebPImagePlugin.WebPImageFile,
}


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    # Displayed source size, for when its header lay past the bytes the upload looked at.
    source_width: int
    source_height: int


def decodable(mime: str | None) -> bool:
    return mime in _PLUGINS


def _open(data: io.BytesIO, mime: str) -> ImageFile.ImageFile:
    return _PLUGINS[mime](data)


def _displayed_size(image: ImageFile.ImageFile) -> tuple[int, int]:
    """Browsers apply EXIF rotation, so 90-degree turns swap width and height."""
    width, height = image.size
    if image.format == "JPEG" and image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
        return height, width
    return width, height


def read_dimensions(head: bytes, mime: str) -> tuple[int, int] | None:
    if not decodable(mime):
        return None
    try:
        with _open(io.BytesIO(head), mime) as image:
            width, height = _displayed_size(image)
    except Exception:  # a hostile header may raise anything: it is just not an image
        return None
    return (width, height) if width > 0 and height > 0 else None


def pixel_budget() -> int:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return min(THUMBNAIL_MAX_PIXELS, pillow_limit) if pillow_limit else THUMBNAIL_MAX_PIXELS


def render_thumbnail(source: io.BytesIO, mime: str) -> Thumbnail | None:
    """Blocking: call it in a worker thread."""
    try:
        with _open(source, mime) as image:
            width, height = image.size
            if width * height > pixel_budget():
                return None
            displayed = _displayed_size(image)
            image.draft("RGB", (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))  # JPEG: decode small
            image.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE))  # in place: one decode
            small = ImageOps.exif_transpose(image)  # after shrinking: the copy is small
            transparent = small.mode in ("RGBA", "LA", "PA") or (
                small.mode == "P" and "transparency" in small.info
            )
            small = small.convert("RGBA" if transparent else "RGB")
            out = io.BytesIO()
            small.save(out, "WEBP", quality=THUMBNAIL_QUALITY)
    except Exception as exc:  # truncated or hostile data: no thumbnail, the file stays valid
        log.info("thumbnail_skipped", mime=mime, error=repr(exc))
        return None
    return Thumbnail(out.getvalue(), *displayed)


class Thumbnailer:
    def __init__(self, slots: int = THUMBNAIL_SLOTS) -> None:
        self._slots = asyncio.Semaphore(slots)

    async def make(self, storage: Storage, key: str, size: int, mime: str) -> Thumbnail | None:
        """Read ``key`` back (the upload never held the whole file) and thumbnail it."""
        if not decodable(mime) or size > THUMBNAIL_MAX_SOURCE_BYTES:
            return None
        async with self._slots:
            source = io.BytesIO()
            async with await storage.open(key) as reader:
                async for chunk in reader.chunks():
                    source.write(chunk)
                    if source.tell() > size:  # never hold more than the upload was allowed
                        raise StorageError(f"{key} is larger than the {size} bytes stored")
            source.seek(0)
            return await asyncio.to_thread(render_thumbnail, source, mime)
