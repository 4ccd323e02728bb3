"""Files of stored points for ``vc2l serve``: ``GET /points/{id}/thumbnail``, ``/image/{n}`` and ``/source``.

The point is looked up by its ID and the path read from its payload (``metadata.image_paths[n]``,
``metadata.source``): only paths the index stored are ever opened, and nothing in a request names a path.

A payload is only a claim, though: anyone who can write points (through LangChain, LlamaIndex or the API) could
write ``source: /etc/passwd``. So a file is served only if its bytes are the ones the point was made from: a
source document must hash to the point's ``metadata.file_hash`` (set by the indexer when it read the file), and
image files must reproduce the point's content hash. Forging either needs the file's bytes already.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import os
import uuid
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from vc2l_retriever.index import content_hash, hash_file, snippet_from_payload
from vc2l_retriever.inputs import InputError, open_image
from vc2l_retriever.serve_requests import APIError
from vc2l_retriever.store import Record

# Stored documents may be HTML written by anyone: served in a sandbox, they cannot script this origin.
FILE_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, max-age=300"}
THUMBNAIL_PX = 256  # thumbnails made from stored image files (payload thumbnails are 128 px)


def image_paths(metadata: dict[str, Any]) -> list[str]:
    """The image files a point's metadata records (anything that is not a string is ignored)."""
    paths = metadata.get("image_paths")
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


async def _point(request: Request) -> Record:
    """The stored point named by the URL's ``id``, or a 404."""
    raw = request.path_params["id"]
    try:
        point_id = str(uuid.UUID(raw))
    except ValueError:
        raise APIError(404, f"no point {raw[:64]!r}", code="not_found") from None
    records = await anyio.to_thread.run_sync(request.app.state.vc2l.store.store.retrieve, [point_id])
    if not records:
        raise APIError(404, f"no point {point_id}", code="not_found")
    return records[0]


def _stored_file(path: str) -> Path:
    """A path taken from a point's payload, if it still names a regular file."""
    try:
        if Path(path).is_file():
            return Path(path)
    except (OSError, ValueError):  # a name too long for the OS, a NUL byte
        pass
    raise APIError(404, f"the stored file {os.path.basename(path)!r} is no longer there", code="file_gone")


def verified_images(record: Record) -> list[str]:
    """The point's image files, if they are still the images it was embedded from (else a 404)."""
    paths = image_paths(record.payload.get("metadata") or {})
    book = record.payload.get("vc2l") if isinstance(record.payload.get("vc2l"), dict) else {}
    if paths:
        try:
            same = content_hash(snippet_from_payload(record.payload)) == book.get("content_hash")
        except (OSError, ValueError):
            same = False
        if not same:
            raise APIError(404, f"the image files of point {record.id} are not the ones it was made from",
                           code="file_gone")
    return paths


def verified_source(record: Record) -> str:
    """The point's source document, if the indexer read it and its bytes are unchanged (else a 404)."""
    metadata = record.payload.get("metadata") or {}
    source, digest = metadata.get("source"), metadata.get("file_hash")
    if not isinstance(source, str) or not source or not isinstance(digest, str):
        raise APIError(404, f"point {record.id} has no source file read by the indexer", code="not_found")
    try:
        same = hash_file(_stored_file(source)) == digest
    except OSError:
        same = False
    if not same:
        raise APIError(404, f"the stored file {os.path.basename(source)!r} changed since it was indexed",
                       code="file_gone")
    return source


def _file_response(path: str) -> Response:
    file = _stored_file(path)
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") and media_type != "text/html":
        media_type = "text/plain"  # Markdown and friends: shown as text, not offered as a download
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    return FileResponse(file, media_type=media_type, headers=FILE_HEADERS)


async def point_thumbnail(request: Request) -> Response:
    """A PNG preview: the payload's thumbnail, else one made from the point's first stored image file."""
    record = await _point(request)
    stored = record.payload.get("thumbnail")
    if isinstance(stored, str) and stored:
        try:
            return Response(base64.b64decode(stored, validate=True), media_type="image/png", headers=FILE_HEADERS)
        except (binascii.Error, ValueError):
            pass  # a damaged thumbnail: fall back to the image file
    paths = await anyio.to_thread.run_sync(verified_images, record)
    if not paths:
        raise APIError(404, f"point {record.id} has no image", code="not_found")
    png = await anyio.to_thread.run_sync(_thumbnail_png, _stored_file(paths[0]))
    return Response(png, media_type="image/png", headers=FILE_HEADERS)


def _thumbnail_png(path: Path) -> bytes:
    try:
        image = open_image(path)  # bounded decoding: the file may have changed since it was indexed
    except InputError as e:
        raise APIError(404, f"the stored image {path.name!r} cannot be read ({e})", code="file_gone") from None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


async def point_image(request: Request) -> Response:
    """The n-th image file stored with a point (``metadata.image_paths[n]``)."""
    record = await _point(request)
    paths, n = await anyio.to_thread.run_sync(verified_images, record), request.path_params["n"]
    if not 0 <= n < len(paths):
        raise APIError(404, f"point {record.id} has {len(paths)} stored image files; no image {n}", code="not_found")
    return _file_response(paths[n])


async def point_source(request: Request) -> Response:
    """The document a point came from (``metadata.source``)."""
    record = await _point(request)
    return _file_response(await anyio.to_thread.run_sync(verified_source, record))
