"""``vc2l serve``: a search page and an HTTP API over one index and one model, both loaded once.

``create_app(store)`` builds the ASGI app (Starlette) over a :class:`~vc2l_retriever.integrations.qdrant.VC2LQdrant`;
``run(store, host, port)`` serves it with uvicorn. Routes (the OpenAPI document at ``/openapi.json`` has the
details):

- ``GET /``: the search page (``static/``: plain HTML, CSS and JS; nothing is fetched from the internet);
- ``POST /v1/embeddings``: OpenAI's embeddings request and response, plus image and ``{"text", "image"}`` inputs;
- ``POST /search``: hits (or documents) for text, an image or both, with thumbnail and file URLs;
- ``GET /points/{id}/thumbnail|image/{n}|source``: files of a stored point. The path is read from the point's
  payload (``metadata.image_paths`` / ``metadata.source``), looked up by point ID; no request names a path;
- ``GET /health``, ``GET /info``, ``GET /sources``, ``GET /openapi.json``.

Embedding work from concurrent requests shares forward passes (``serve_batch.MicroBatcher``). Bodies, items and
images are bounded (``serve_requests.Limits``); bad input gets a 4xx JSON error naming the item. With an API key,
every request but the page shell (``/`` and ``/static/``, which hold no data) must send ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import anyio.to_thread
    import uvicorn
    from starlette.applications import Starlette
    from starlette.datastructures import Headers
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as e:  # the core package works without the server
    raise ImportError("vc2l serve needs starlette and uvicorn: pip install 'vc2l-retriever[serve]'") from e

import numpy as np

from vc2l_retriever import __version__
from vc2l_retriever.hub import encode_lock
from vc2l_retriever.index import Hit, list_sources
from vc2l_retriever.inputs import InputError
from vc2l_retriever.integrations.qdrant import VC2LQdrant
from vc2l_retriever.serve_batch import MicroBatcher
from vc2l_retriever.serve_files import image_paths, point_image, point_source, point_thumbnail
from vc2l_retriever.serve_openapi import openapi_schema
from vc2l_retriever.serve_requests import APIError, Limits, parse_embeddings, parse_search, read_json

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
# The page runs only its own script and talks only to this server; thumbnails arrive as blob: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
}
IMAGE_REQUESTS_AT_ONCE = 4  # requests holding decoded images at one time: bounds their memory
MAX_SOURCES = 1000


@dataclass
class ServerState:
    """What the handlers share: the store (with its model), limits, the batcher and the server's identity."""

    store: VC2LQdrant
    limits: Limits
    batcher: MicroBatcher
    model_name: str
    api_key: str | None
    image_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = field(
        default_factory=weakref.WeakKeyDictionary)

    @property
    def dim(self) -> int:
        return self.store.identity.dim

    def slots(self) -> asyncio.Semaphore:
        """The image-request semaphore of the running event loop (a test client may start several loops)."""
        loop = asyncio.get_running_loop()
        if loop not in self.image_slots:
            self.image_slots[loop] = asyncio.Semaphore(IMAGE_REQUESTS_AT_ONCE)
        return self.image_slots[loop]


def model_encoder(model: Any) -> Callable[[list[Any]], np.ndarray]:
    """``model.encode`` as the batcher calls it, one pass at a time per model."""
    lock = encode_lock(model)

    def encode(items: list[Any]) -> np.ndarray:
        with lock:  # parallel passes on one model would only oversubscribe the CPU
            return model.encode(items, batch_size=32, convert_to_numpy=True, show_progress_bar=False)

    return encode


def create_app(store: VC2LQdrant, *, api_key: str | None = None, limits: Limits | None = None,
               batching: bool = True, batch_window_ms: float = 2.0, max_batch: int = 64,
               model_name: str | None = None) -> Starlette:
    """The ASGI app over ``store`` (its model encodes queries and embedding requests).

    Args:
        store: An open index; the app does not close it.
        api_key: When set, every request but the page shell must send ``Authorization: Bearer <api_key>``.
        limits: Request bounds (body size, items, image pixels, result depth).
        batching: Share forward passes between concurrent requests (``False``: one pass per request).
        batch_window_ms: How long an idle server waits for more requests to join a pass.
        max_batch: Most inputs in one shared pass.
        model_name: Reported as ``model`` in embedding responses (default: the store's model name).
    """
    state = ServerState(store, limits or Limits(),
                        MicroBatcher(model_encoder(store.model), max_batch=max_batch, window_ms=batch_window_ms,
                                     enabled=batching),
                        model_name or store.identity.name or "vc2l", api_key or None)
    routes = [
        Route("/", page), Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/health", health), Route("/info", info), Route("/sources", sources),
        Route("/openapi.json", openapi),
        Route("/v1/embeddings", embeddings, methods=["POST"]), Route("/search", search, methods=["POST"]),
        Route("/points/{id}/thumbnail", point_thumbnail), Route("/points/{id}/image/{n:int}", point_image),
        Route("/points/{id}/source", point_source),
    ]
    middleware = [Middleware(APIKeyMiddleware, key=api_key)] if api_key else []
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        APIError: _api_error, HTTPException: _http_error, Exception: _internal_error})
    app.state.vc2l = state
    return app


def _state(request: Request) -> ServerState:
    return request.app.state.vc2l


# --- Errors and the API key ----------------------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"no route {request.url.path}"
    return APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).response(
        dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("internal error on %s %s", request.method, request.url.path)
    return APIError(500, "internal server error (logged)", kind="server_error").response()


class APIKeyMiddleware:
    """Refuses (401) every request without ``Authorization: Bearer <key>``, except the page shell."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_page_shell(scope["path"]) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key",
                         kind="authentication_error")
        await error.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)


def _is_page_shell(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


# --- Page, health, info ----------------------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    """The search page."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


async def health(request: Request) -> Response:
    """Liveness: the server answers."""
    return JSONResponse({"status": "ok"})


async def info(request: Request) -> Response:
    """Model identity, collection, point count, limits and batching counters."""
    state = _state(request)
    collection = await anyio.to_thread.run_sync(state.store.info)
    return JSONResponse({"model": {**state.store.identity.to_dict(), "name": state.model_name},
                         "collection": collection, "points": collection["points"],
                         "limits": state.limits.to_dict(), "batching": state.batcher.stats.to_dict(),
                         "api_key_required": state.api_key is not None, "version": __version__})


async def sources(request: Request) -> Response:
    """The indexed documents (for the page's source filter)."""
    values = await anyio.to_thread.run_sync(list_sources, _state(request).store.store)
    return JSONResponse({"sources": [{"source": s, "name": _name(s)} for s in values[:MAX_SOURCES]],
                         "truncated": len(values) > MAX_SOURCES})


async def openapi(request: Request) -> Response:
    """The OpenAPI document."""
    state = _state(request)
    return JSONResponse(openapi_schema(version=__version__, secured=state.api_key is not None, limits=state.limits))


def _name(source: Any) -> str | None:
    return os.path.basename(source) if isinstance(source, str) else None


# --- Embeddings and search ----------------------------------------------------------------------------------------


def _has_images(data: Any) -> bool:
    """Whether a body carries images (they are decoded under the image-request semaphore)."""
    if not isinstance(data, dict):
        return False
    inputs = data.get("input")
    return data.get("image") is not None or (
        isinstance(inputs, list) and any(isinstance(x, dict) and x.get("image") is not None for x in inputs))


async def _encode(state: ServerState, items: list[Any]) -> np.ndarray:
    try:
        return await state.batcher.encode(items)
    except (InputError, TypeError) as e:  # inputs are checked before this; a refusal here is still bad input
        raise APIError(400, str(e), param="input", code="invalid_input") from None


async def embeddings(request: Request) -> Response:
    """``POST /v1/embeddings``: OpenAI's request and response shape."""
    state = _state(request)
    data = await read_json(request, state.limits.max_body_bytes)
    if _has_images(data):
        async with state.slots():
            parsed = await anyio.to_thread.run_sync(parse_embeddings, data, state.limits, state.dim)
            vectors = await _encode(state, parsed.items)
    else:
        parsed = parse_embeddings(data, state.limits, state.dim)
        vectors = await _encode(state, parsed.items)
    rows = [{"object": "embedding", "index": i, "embedding": _vector(v, parsed.encoding_format)}
            for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": parsed.characters, "total_tokens": parsed.characters}
    return JSONResponse({"object": "list", "data": rows, "model": state.model_name, "usage": usage})


def _vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # as OpenAI: the little-endian float32 bytes
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


async def search(request: Request) -> Response:
    """``POST /search``: hits, or hits grouped by document, for text, an image or both."""
    state = _state(request)
    data = await read_json(request, state.limits.max_body_bytes)
    if _has_images(data):
        async with state.slots():
            query = await anyio.to_thread.run_sync(parse_search, data, state.limits)
            vector = (await _encode(state, [query.query]))[0]
    else:
        query = parse_search(data, state.limits)
        vector = (await _encode(state, [query.query]))[0]
    store, prefix = state.store, request.scope.get("root_path", "")
    try:
        if query.group:
            groups = await anyio.to_thread.run_sync(lambda: store.search_groups(
                vector, limit=query.limit, group_size=query.group_size, source=query.source))
            return JSONResponse({"groups": [{"source": g.key, "name": _name(g.key),
                                             "hits": [hit_json(h, prefix) for h in g.hits]} for g in groups]})
        hits = await anyio.to_thread.run_sync(lambda: store.search(
            vector, limit=query.limit, offset=query.offset, source=query.source))
    except ValueError as e:  # a filter the store cannot apply
        raise APIError(400, str(e), param="source") from None
    return JSONResponse({"hits": [hit_json(h, prefix) for h in hits], "limit": query.limit, "offset": query.offset})


def hit_json(hit: Hit, prefix: str = "") -> dict[str, Any]:
    """A hit as the API returns it: text, provenance, score and the URLs of its files (never their paths' bytes)."""
    md = hit.payload.get("metadata") or {}
    source, page = md.get("source"), md.get("page")
    base = f"{prefix}/points/{hit.id}"
    images = [f"{base}/image/{i}" for i in range(len(image_paths(md)))]
    source_url = f"{base}/source" if isinstance(source, str) and source else None
    opened = source_url
    if source_url and page and str(source).lower().endswith(".pdf"):
        opened = f"{source_url}#page={page}"  # browsers' PDF viewers open at this page
    if images and (hit.snippet.kind == "image" or opened is None):
        opened = images[0]
    has_thumbnail = bool(hit.payload.get("thumbnail")) or bool(images)
    return {"id": hit.id, "score": hit.score, "text": hit.text, "source": source, "name": _name(source),
            "page": page, "order": md.get("order"), "kind": hit.snippet.kind,
            "thumbnail_url": f"{base}/thumbnail" if has_thumbnail else None, "image_urls": images,
            "source_url": source_url, "open_url": opened}


# --- Running -----------------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for hosts only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(store: VC2LQdrant, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
        log_level: str = "info", **options: Any) -> None:
    """Serve ``create_app(store, ...)`` with uvicorn until interrupted."""
    app = create_app(store, api_key=api_key, **options)
    # Past this many requests in flight uvicorn answers 503 at once, instead of queueing without bound.
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=128, timeout_graceful_shutdown=5)
