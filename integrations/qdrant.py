"""Qdrant adapter: one class that indexes documents and searches them with a VC2L model, embedded or on a server.

Thin by design: every method delegates to :mod:`vc2l_retriever.index`, where the logic (point IDs, payloads,
batching, change detection, filters) lives once, over a :class:`~vc2l_retriever.store.Store` (Qdrant Edge in this
process, or a Qdrant server). Read that module's docstring for the payload layout and embedded mode's limits.

Example::

    from vc2l_retriever.integrations.qdrant import VC2LQdrant

    with VC2LQdrant(model, path="./vc2l_index") as store:     # or ":memory:", or url=..., api_key=...
        print(store.index(["docs/"]).summary())
        for hit in store.search("quarterly revenue chart", limit=5):
            print(hit.score, hit.source, hit.snippet.page)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vc2l_retriever.integrations import require

require("qdrant", "qdrant_client")

from qdrant_client import QdrantClient, models  # noqa: E402

from vc2l_retriever import index as _index  # noqa: E402
from vc2l_retriever.index import (  # noqa: E402
    DEFAULT_COLLECTION,
    SOURCE_KEY,
    Hit,
    HitGroup,
    IndexReport,
    Query,
    Thumbnails,
)
from vc2l_retriever.inputs import Snippet  # noqa: E402
from vc2l_retriever.store import Store  # noqa: E402

__all__ = ["Hit", "HitGroup", "IndexReport", "VC2LQdrant"]


class VC2LQdrant:
    """A Qdrant collection of VC2L embeddings: ``index`` documents, ``search`` them by text, image or snippet.

    Args:
        model: A VC2L ``SentenceTransformer``; ``None`` loads the shipped default (``vc2l_retriever.load()``).
        client: An existing ``QdrantClient`` (a server; not closed by :meth:`close`). Otherwise the store is:
        path: Embedded index folder (default ``./vc2l_index``) or ``":memory:"`` (Qdrant Edge in this process).
        url: Qdrant server URL (with ``api_key`` for a cloud cluster).
        api_key: Server API key.
        collection_name: Collection to use; created on first use, sized for the model (dot product).
        create: Create the collection if missing (``False``: raise ``CollectionNotFoundError``).
        thumbnails: For image snippets: ``"bytes"`` stores a base64 PNG of at most 128 px, ``"path"`` only the
            image files' paths (``metadata.image_paths``, always stored), ``"none"`` nothing extra.
        batch_size: Snippets encoded and upserted at a time.
        model_name: Informational name stored with the model's fingerprint.
        shard_number, replication_factor, on_disk, quantization: Passed to collection creation on a server
            (``on_disk``: vectors on disk; ``quantization``: int8 scalar quantization in RAM).

    Raises:
        IndexMismatchError: The collection was built with another model or vector size.
        IndexInUseError: The embedded folder is open in another process or store.
        LegacyIndexError: The folder was written before Qdrant Edge (``vc2l migrate-index`` converts it).
    """

    def __init__(self, model: Any = None, *, client: QdrantClient | None = None,
                 path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None,
                 collection_name: str = DEFAULT_COLLECTION, create: bool = True, thumbnails: Thumbnails = "bytes",
                 batch_size: int = 32, model_name: str = "", shard_number: int | None = None,
                 replication_factor: int | None = None, on_disk: bool = False, quantization: bool = False) -> None:
        if model is None:
            from vc2l_retriever import load

            model = load()
        self.model = model
        self.collection_name = collection_name
        self.thumbnails, self.batch_size = thumbnails, batch_size
        self.identity = _index.model_identity(model, model_name)
        self.store: Store = _index.open_index(path, url=url, api_key=api_key, collection=collection_name,
                                              client=client)
        try:
            _index.ensure_collection(self.store, self.identity, create=create, shard_number=shard_number,
                                     replication_factor=replication_factor, on_disk=on_disk,
                                     quantization=quantization)
        except BaseException:
            self.close()  # release the embedded folder's lock
            raise

    def index(self, items: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[Snippet], *,
              options: Any = None, progress: bool | None = None, prune: bool = False,
              stop: Callable[[], bool] | None = None) -> IndexReport:
        """Index files and folders (via ``vc2l_retriever.ingest``) or Snippets; see ``index.index``.

        ``prune=True`` deletes the points of files that vanished from the folders being indexed. ``stop`` (files
        only) is polled after every snippet; when it returns True the run ends after the batch in progress."""
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "thumbnails": self.thumbnails, "progress": progress}
        if prune:
            kwargs["prune"] = True
        if stop is not None:
            kwargs["stop"] = stop
        if options is not None:
            kwargs["options"] = options
        return _index.index(self.store, self.model, items, **kwargs)

    def search(self, query: Query, limit: int = 10, *, source: str | None = None,
               filter: models.Filter | None = None, score_threshold: float | None = None,
               offset: int = 0) -> list[Hit]:
        """Best hits for text (``str``), a PIL image, an image file (``Path``) or a Snippet."""
        return _index.search(self.store, self.model, query, limit=limit, source=source, filter=filter,
                             score_threshold=score_threshold, offset=offset)

    def search_groups(self, query: Query, limit: int = 5, *, group_by: str = SOURCE_KEY, group_size: int = 3,
                      source: str | None = None, filter: models.Filter | None = None) -> list[HitGroup]:
        """Best ``limit`` documents (or other ``group_by`` values), up to ``group_size`` hits each."""
        return _index.search_groups(self.store, self.model, query, group_by=group_by, limit=limit,
                                    group_size=group_size, source=source, filter=filter)

    def delete(self, source: str | Path) -> int:
        """Delete a document's points (exact source or glob); returns how many."""
        return _index.delete(self.store, os.fspath(source))

    def count(self, source: str | None = None) -> int:
        """Points in the collection, or of one source (exact or glob)."""
        return _index.count(self.store, source)

    def info(self) -> dict[str, Any]:
        """Points, vector size, recorded model and mode of the collection."""
        return _index.collection_info(self.store)

    def close(self) -> None:
        """Close the store (unlocks an embedded folder; a ``client`` passed in stays open)."""
        if getattr(self, "store", None) is not None:
            self.store.close()

    def __enter__(self) -> VC2LQdrant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
