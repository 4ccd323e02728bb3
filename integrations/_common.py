"""What the LangChain and LlamaIndex vector stores share: point IDs for framework IDs, model identities for
embeddings that are not VC2L, and metadata filters on the project's payload layout.

Plain Python over :mod:`vc2l_retriever.index`; neither framework is imported here.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from vc2l_retriever import index as _index
from vc2l_retriever.store import Record

# Framework IDs that are not UUIDs ("1", "doc-7") become UUIDv5s in this namespace: Qdrant takes only UUIDs (and
# unsigned integers), and both frameworks map the same ID to the same point.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://arxiv.org/abs/2510.18703#vc2l-framework-id")
EXTERNAL_ID = "id"  # key under the payload's "vc2l" record holding a framework ID that is not the point ID
METADATA_KEYS = "metadata_keys"  # key under "vc2l": the metadata keys a framework caller gave (exact round trip)
METADATA_PREFIX = "metadata."


def point_key(id_: str) -> str:
    """The point ID for a framework ID: a UUID as Qdrant spells it, any other string hashed to one."""
    try:
        return str(uuid.UUID(str(id_)))
    except ValueError:
        return str(uuid.uuid5(_ID_NAMESPACE, str(id_)))


def remember_id(payload: dict[str, Any], id_: str) -> None:
    """Keep the caller's ID in the payload when the point ID differs from it, so reads return it unchanged."""
    if point_key(id_) != id_:
        payload.setdefault(_index.METADATA_KEY, {})[EXTERNAL_ID] = id_


def external_id(record: Record) -> str:
    """The ID a framework was given for this point (the point ID unless it was remembered)."""
    book = record.payload.get(_index.METADATA_KEY)
    remembered = book.get(EXTERNAL_ID) if isinstance(book, dict) else None
    return str(remembered) if remembered is not None else record.id


def foreign_identity(embedder: Any, dim: int) -> _index.ModelIdentity:
    """A model identity for embeddings that are not a VC2L model (their weights cannot be fingerprinted).

    The class and the model name it reports (``model`` / ``model_name``) stand in for config and weights, so a
    collection made with one such model refuses vectors from another class, model name or size.
    """
    cls = type(embedder)
    name = getattr(embedder, "model", None) or getattr(embedder, "model_name", None)
    config = {"class": f"{cls.__module__}.{cls.__qualname__}", "model": name if isinstance(name, str) else None}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return _index.ModelIdentity(dim, config_hash, _index.FOREIGN_WEIGHTS, cls.__name__)


def metadata_key(key: str) -> str:
    """Payload key of a metadata field: caller metadata lives under ``metadata`` (``metadata.source``)."""
    return key if key.startswith(METADATA_PREFIX) else METADATA_PREFIX + key


def equality_filter(filter: models.Filter | Mapping[str, Any] | None) -> models.Filter | None:
    """A Qdrant filter as is, or one from ``{key: value}`` metadata equalities (a list value matches any of it)."""
    if filter is None or isinstance(filter, models.Filter):
        return filter
    if not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a qdrant_client.models.Filter or a dict, got {type(filter).__name__}")
    return models.Filter(must=[field_equals(metadata_key(key), value) for key, value in filter.items()])


def field_equals(key: str, value: Any) -> models.FieldCondition:
    """``key`` equals ``value``; a list value matches any of its items, a float matches by range (Qdrant matches
    only keywords, integers and booleans exactly)."""
    if isinstance(value, (list, tuple, set)):
        return models.FieldCondition(key=key, match=models.MatchAny(any=list(value)))
    if isinstance(value, float):
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def id_filter(ids: list[str]) -> models.Filter:
    """Points whose framework IDs are among ``ids``."""
    return _index.with_parts([point_key(i) for i in ids])
