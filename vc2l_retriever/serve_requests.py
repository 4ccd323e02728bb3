"""Request bodies of the HTTP API (``vc2l_retriever.serve``), read and checked before any work is done.

Every way a body can be wrong ends here as an :class:`APIError`: a 4xx JSON answer in OpenAI's error shape that
names the offending field or item (``param``: ``input[3].image``), never a 500. Bodies are read up to a size
limit; images are decoded with the package's bounded decoding (``inputs.open_image``), under a per-image and a
per-request pixel budget, so a small file declaring a huge picture is refused before its pixels are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse

from vc2l_retriever.inputs import InputError, open_image


class APIError(Exception):
    """A request the API refuses: HTTP status, message, and the field or item at fault (``param``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The JSON answer (OpenAI's shape, so OpenAI clients show the message)."""
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass(frozen=True)
class Limits:
    """Bounds on one request. The defaults keep one request's decoded images under ~200 MB.

    Attributes:
        max_body_bytes: Largest request body (413 above it).
        max_items: Most inputs in one ``/v1/embeddings`` request.
        max_image_pixels: Largest image (width x height), checked before decoding.
        max_request_pixels: Most pixels of all the images of one request together.
        max_limit: Most hits one search returns.
        max_offset: Deepest page of hits (``offset``).
        max_group_size: Most hits per document when grouping.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_items: int = 256
    max_image_pixels: int = 16_000_000
    max_request_pixels: int = 64_000_000
    max_limit: int = 100
    max_offset: int = 10_000
    max_group_size: int = 20

    def to_dict(self) -> dict[str, int]:
        """Plain dict for ``GET /info``."""
        return dict(self.__dict__)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body parsed as JSON, read no further than ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, "invalid Content-Length header")
        if int(declared) > max_bytes:
            raise APIError(413, f"request body of {declared} bytes exceeds the {max_bytes}-byte limit",
                           code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no Content-Length: count as it arrives
        body += chunk
        if len(body) > max_bytes:
            raise APIError(413, f"request body exceeds the {max_bytes}-byte limit", code="body_too_large")
    if len(body) < 1 << 20:
        return parse_json(bytes(body))
    return await anyio.to_thread.run_sync(parse_json, bytes(body))  # megabytes of base64: off the event loop


def parse_json(body: bytes) -> Any:
    """JSON from bytes, or a 400."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise APIError(400, f"request body is not valid JSON ({e})") from None


def json_type(value: Any) -> str:
    """A JSON value's type as a client would name it."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class PixelBudget:
    """Pixels left for the images of one request."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.left = limits, limits.max_request_pixels

    def take(self, width: int, height: int, param: str) -> None:
        """Count an image, or refuse it (declared size over the per-image or per-request limit)."""
        pixels = width * height
        if pixels > self.limits.max_image_pixels:
            raise APIError(400, f"{param}: a {width}x{height} image exceeds the {self.limits.max_image_pixels}-pixel "
                                "limit", param=param, code="image_too_large")
        if pixels > self.left:
            raise APIError(400, f"{param}: the request's images exceed {self.limits.max_request_pixels} pixels in all",
                           param=param, code="image_too_large")
        self.left -= pixels


def decode_image(value: Any, param: str, budget: PixelBudget) -> Image.Image:
    """An RGB image from a base64 string or a ``data:`` URI, decoded only if its declared size fits ``budget``."""
    if not isinstance(value, str):
        raise APIError(400, f"{param}: an image must be a base64 string or a data: URI, got {json_type(value)}",
                       param=param)
    data = value
    if value.startswith("data:"):
        header, comma, data = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise APIError(400, f"{param}: a data: URI must be base64-encoded (data:image/png;base64,...)",
                           param=param)
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64", param=param, code="invalid_image") from None
    if not raw:
        raise APIError(400, f"{param}: the image is empty", param=param, code="invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))  # reads the header only: the size is known before decoding
        budget.take(*image.size, param)
        return open_image(image, max_pixels=budget.limits.max_image_pixels)
    except APIError:
        raise
    except InputError as e:
        raise APIError(400, f"{param}: {str(e).split(': ', 1)[-1]}", param=param, code="invalid_image") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types on corrupt files; all are bad input
        raise APIError(400, f"{param}: cannot decode image ({type(e).__name__}: {e})", param=param,
                       code="invalid_image") from None


# --- POST /v1/embeddings --------------------------------------------------------------------------------------------


@dataclass
class EmbeddingRequest:
    """A checked ``/v1/embeddings`` body: inputs ready for ``model.encode`` and what the answer needs."""

    items: list[Any]
    encoding_format: str
    characters: int  # usage: VC2L has no tokenizer, so it counts characters of text (and one per image)


def parse_embeddings(data: Any, limits: Limits, dim: int) -> EmbeddingRequest:
    """OpenAI's embeddings request; inputs may also be ``{"text", "image"}`` objects (image: base64 or data URI).

    ``model`` and ``user`` are accepted and ignored (OpenAI clients always send a model name); ``dimensions``
    must equal the model's size when given, since VC2L vectors cannot be shortened.
    """
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {json_type(data)}")
    if "input" not in data:
        raise APIError(400, "missing 'input': a string, or an array of strings and {text, image} objects",
                       param="input")
    inputs = data["input"]
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and _is_token_array(inputs)):
        inputs = [inputs]  # one input; a token array is refused below, by position
    if not isinstance(inputs, list):
        raise APIError(400, f"'input' must be a string or an array, got {json_type(inputs)}", param="input")
    if not inputs:
        raise APIError(400, "'input' is empty", param="input")
    if len(inputs) > limits.max_items:
        raise APIError(400, f"'input' has {len(inputs)} items; at most {limits.max_items} per request",
                       param="input", code="too_many_items")
    fmt = data.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise APIError(400, f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", param="encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions != dim):
        raise APIError(400, f"'dimensions' must be {dim} (this model's size) when given, got {dimensions!r}",
                       param="dimensions")
    if not isinstance(data.get("model", ""), str):
        raise APIError(400, f"'model' must be a string, got {json_type(data['model'])}", param="model")
    budget = PixelBudget(limits)
    parsed = [_embedding_input(value, i, budget) for i, value in enumerate(inputs)]
    return EmbeddingRequest([item for item, _ in parsed], fmt, sum(n for _, n in parsed))


def _is_token_array(value: list[Any]) -> bool:
    return all(type(v) is int for v in value)


def _embedding_input(value: Any, i: int, budget: PixelBudget) -> tuple[Any, int]:
    """One input as ``model.encode`` takes it, and its usage count."""
    param = f"input[{i}]"
    if isinstance(value, str):
        return value, len(value)
    if isinstance(value, list) and value and _is_token_array(value):
        raise APIError(400, f"{param}: token arrays are not supported (VC2L reads text as pixels); send the text",
                       param=param)
    if not isinstance(value, dict):
        raise APIError(400, f"{param}: expected a string or an object with 'text' and/or 'image', got "
                            f"{json_type(value)}", param=param)
    unknown = sorted(set(value) - {"text", "image"})
    if unknown or not value:
        raise APIError(400, f"{param}: an object input takes 'text' and/or 'image', got keys {sorted(value)}",
                       param=param)
    text = value.get("text", "")
    if not isinstance(text, str):
        raise APIError(400, f"{param}.text: expected a string, got {json_type(text)}", param=f"{param}.text")
    if value.get("image") is None:
        return text, len(text)
    image = decode_image(value["image"], f"{param}.image", budget)
    return ({"text": text, "image": image} if text else image), len(text) + 1


# --- POST /search ---------------------------------------------------------------------------------------------------

SEARCH_FIELDS = ("text", "image", "limit", "offset", "source", "group_by_document", "group_size")


@dataclass
class SearchRequest:
    """A checked ``/search`` body."""

    query: Any  # str, PIL image, or {"text", "image"}: what model.encode takes
    text: str
    limit: int
    offset: int
    source: str | None
    group: bool
    group_size: int


def parse_search(data: Any, limits: Limits) -> SearchRequest:
    """A search by ``text``, ``image`` (base64 or data URI) or both (one interleaved query)."""
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {json_type(data)}")
    unknown = sorted(set(data) - set(SEARCH_FIELDS))
    if unknown:
        raise APIError(400, f"unknown field {unknown[0]!r}; fields: {', '.join(SEARCH_FIELDS)}", param=unknown[0])
    text = _optional(data, "text", str) or ""
    source = _optional(data, "source", str) or None
    image = None
    if data.get("image") is not None:
        image = decode_image(data["image"], "image", PixelBudget(limits))
    if not text.strip() and image is None:
        raise APIError(400, "give 'text', 'image' or both", param="text")
    query = text if image is None else ({"text": text, "image": image} if text.strip() else image)
    group = _optional(data, "group_by_document", bool) or False
    offset = _integer(data, "offset", 0, 0, limits.max_offset)
    if group and offset:
        raise APIError(400, "'offset' does not apply to group_by_document; ask for a larger 'limit'", param="offset")
    return SearchRequest(query, text, _integer(data, "limit", 10, 1, limits.max_limit), offset, source, group,
                         _integer(data, "group_size", 3, 1, limits.max_group_size))


def _optional(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is not None and type(value) is not kind:
        raise APIError(400, f"'{key}' must be a {json_type(kind())}, got {json_type(value)}", param=key)
    return value


def _integer(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = _optional(data, key, int)
    if value is None:
        return default
    if not low <= value <= high:
        raise APIError(400, f"'{key}' must be between {low} and {high}, got {value}", param=key)
    return value
