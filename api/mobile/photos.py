"""Photos of reports: read from a multipart form within caps, checked by their content.

The whole body was capped before it was read (``api.limits.PHOTO_ROUTES``); here each photo is
refused past ``photo_max_mb`` before its bytes are read, then decoded in full with Pillow on a
worker thread: only JPEG, PNG and WebP that decode completely, at most ``photo_max_pixels``,
are kept — whatever the file name or the ``Content-Type`` the phone claimed. The stored type is
the one Pillow found.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import FormData, UploadFile

from api.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from api.settings import MobileSettings

TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MB = 1024 * 1024


@dataclass(frozen=True)
class Photo:
    content_type: str
    width: int
    height: int
    data: bytes


def check_image(data: bytes, *, name: str, max_pixels: int, field: str = "photo") -> Photo:
    """The photo if ``data`` is a whole JPEG, PNG or WebP image; else 415/422 naming ``name``
    (the message) and ``field`` (the form field)."""
    if not data:
        raise Unprocessable(f"{name} is empty", field=field)
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            width, height = image.size
            if kind not in TYPES:
                raise UnsupportedMediaType(
                    f"{name} is a {kind} image; send JPEG, PNG or WebP", field=field
                )
            if width * height > max_pixels:
                raise Unprocessable(
                    f"{name} is {width}×{height} pixels; at most {max_pixels:,} "
                    "(GRIDPATROL_MOBILE_PHOTO_MAX_PIXELS)",
                    field=field,
                )
            image.load()  # decode it all: a truncated or corrupt file fails here
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise UnsupportedMediaType(
            f"{name} is not an image (JPEG, PNG or WebP): {type(exc).__name__}", field=field
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise Unprocessable(f"{name} is a damaged image: {exc}", field=field) from exc
    return Photo(content_type=TYPES[kind], width=width, height=height, data=data)


async def read_photos(
    form: FormData, settings: MobileSettings, *, field: str = "photo", most: int | None = None
) -> list[Photo]:
    """The form's photos under ``field``, each within the caps and checked (see the module)."""
    most = settings.max_photos if most is None else most
    parts = [p for p in form.getlist(field) if not (isinstance(p, str) and p == "")]
    if len(parts) > most:
        raise Unprocessable(f"too many photos: {len(parts)}; at most {most}", field=field)
    limit = int(settings.photo_max_mb * MB)
    photos = []
    for i, part in enumerate(parts, start=1):
        name = f"{field} {i}"
        if not isinstance(part, UploadFile):
            raise Unprocessable(f"{name} is text, not a file", field=field)
        if part.size is not None and part.size > limit:
            raise PayloadTooLarge(
                f"{name} is {part.size / MB:.1f} MB; at most {settings.photo_max_mb:g} MB "
                "(resize it first)",
                field=field,
            )
        data = await part.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(
                f"{name} is larger than {settings.photo_max_mb:g} MB (resize it first)",
                field=field,
            )
        photos.append(
            await asyncio.to_thread(
                check_image, data, name=name, max_pixels=settings.photo_max_pixels, field=field
            )
        )
    return photos
