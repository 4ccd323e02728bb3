"""The HTTP API's OpenAPI 3.1 document (``GET /openapi.json``), written by hand beside the handlers it describes.

Written out rather than generated: the API is small, and the schema then says exactly what the handlers in
``serve.py`` and the checks in ``serve_requests.py`` accept (tests compare its paths with the app's routes).
"""

from __future__ import annotations

from typing import Any

from vc2l_retriever.serve_requests import Limits


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "bad input; `error.param` names the field or item", 401: "missing or wrong API key",
            404: "no such point, or its stored file is gone", 413: "request body too large"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_IMAGE = {"type": "string", "description": "base64 of an image file (PNG, JPEG, WebP, GIF, ...) or a data: URI"}


def _schemas(limits: Limits) -> dict[str, Any]:
    interleaved = {"type": "object", "additionalProperties": False, "minProperties": 1,
                   "description": "extension: an image, or text and image embedded together as one vector",
                   "properties": {"text": {"type": "string"}, "image": _IMAGE}}
    hit_urls = {"thumbnail_url": {"type": ["string", "null"]},
                "image_urls": {"type": "array", "items": {"type": "string"}},
                "source_url": {"type": ["string", "null"]},
                "open_url": {"type": ["string", "null"], "description": "the page or image at full size"}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
        "EmbeddingRequest": {"type": "object", "required": ["input"], "properties": {
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "maxItems": limits.max_items,
                                                     "items": {"oneOf": [{"type": "string"}, interleaved]}}]},
            "model": {"type": "string", "description": "accepted and ignored: the server has one model"},
            "encoding_format": {"enum": ["float", "base64"], "default": "float"},
            "dimensions": {"type": "integer", "description": "must equal the model's size when given"},
            "user": {"type": "string"}}},
        "Embedding": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
            "object": {"const": "embedding"}, "index": {"type": "integer"},
            "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}},
                                    {"type": "string", "description": "base64 of little-endian float32"}]}}},
        "EmbeddingResponse": {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": _ref("Embedding")},
            "model": {"type": "string"},
            "usage": {"type": "object", "description": "VC2L has no tokenizer: text characters, plus 1 per image",
                      "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}},
        "SearchRequest": {"type": "object", "additionalProperties": False, "properties": {
            "text": {"type": "string"}, "image": _IMAGE,
            "limit": {"type": "integer", "minimum": 1, "maximum": limits.max_limit, "default": 10},
            "offset": {"type": "integer", "minimum": 0, "maximum": limits.max_offset, "default": 0},
            "source": {"type": "string", "description": "only this source: an exact path or a glob (* spans /)"},
            "group_by_document": {"type": "boolean", "default": False},
            "group_size": {"type": "integer", "minimum": 1, "maximum": limits.max_group_size, "default": 3}}},
        "Hit": {"type": "object", "properties": {
            "id": {"type": "string"}, "score": {"type": "number"}, "text": {"type": "string"},
            "source": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
            "page": {"type": ["integer", "null"]}, "order": {"type": ["integer", "null"]},
            "kind": {"type": "string"}, **hit_urls}},
        "SearchResponse": {"type": "object", "properties": {
            "hits": {"type": "array", "items": _ref("Hit")},
            "groups": {"type": "array", "items": {"type": "object", "properties": {
                "source": {"type": "string"}, "name": {"type": "string"},
                "hits": {"type": "array", "items": _ref("Hit")}}}}}},
    }


def _paths() -> dict[str, Any]:
    obj = {"type": "object"}
    file = {"description": "the stored file", "content": {"*/*": {}}}
    point = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]
    return {
        "/health": {"get": {"summary": "liveness", "responses": {"200": _json(obj, "ok"), **_errors(401)}}},
        "/info": {"get": {"summary": "model identity, point count, limits",
                          "responses": {"200": _json(obj, "info"), **_errors(401)}}},
        "/sources": {"get": {"summary": "the indexed documents", "responses": {"200": _json(obj, "sources"),
                                                                              **_errors(401)}}},
        "/v1/embeddings": {"post": {
            "summary": "embeddings, OpenAI-compatible for text; images and interleaved inputs as an extension",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("EmbeddingRequest")}}},
            "responses": {"200": _json(_ref("EmbeddingResponse"), "one vector per input, in order"),
                          **_errors(400, 401, 413)}}},
        "/search": {"post": {
            "summary": "search the index by text, image or both",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SearchRequest")}}},
            "responses": {"200": _json(_ref("SearchResponse"), "hits (or groups), best first"),
                          **_errors(400, 401, 413)}}},
        "/points/{id}/thumbnail": {"get": {"summary": "a point's thumbnail (PNG)", "parameters": point,
                                           "responses": {"200": file, **_errors(401, 404)}}},
        "/points/{id}/image/{n}": {"get": {
            "summary": "the n-th image file stored with a point", "responses": {"200": file, **_errors(401, 404)},
            "parameters": [*point, {"name": "n", "in": "path", "required": True, "schema": {"type": "integer"}}]}},
        "/points/{id}/source": {"get": {"summary": "the document a point came from", "parameters": point,
                                        "responses": {"200": file, **_errors(401, 404)}}},
        "/openapi.json": {"get": {"summary": "this document", "responses": {"200": _json(obj, "OpenAPI 3.1")}}},
    }


def openapi_schema(*, version: str, secured: bool, limits: Limits) -> dict[str, Any]:
    """The OpenAPI document; with ``secured`` every operation requires the bearer key."""
    schema: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "vc2l-retriever", "version": version,
                 "description": "OCR-free multimodal embeddings and search: every input is rendered to pixels and "
                                "embedded by one vision network."},
        "paths": _paths(),
        "components": {"schemas": _schemas(limits),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if secured:
        schema["security"] = [{"bearer": []}]
    return schema
