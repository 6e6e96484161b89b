"""Response classes: GeoJSON bodies are produced by PostGIS as text and passed through."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response


class GeoJSONResponse(Response):
    """``application/geo+json``; accepts a ready JSON string (from SQL) or a Python object."""

    media_type = "application/geo+json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode()
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
