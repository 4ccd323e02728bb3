"""LangChain adapter: VC2L as a LangChain ``Embeddings``, a document loader, and vector stores over the VC2L index.

Thin by design: embedding is ``model.encode``, loading is :func:`vc2l_retriever.ingest.ingest`, and points written
here get the payload and IDs of :mod:`vc2l_retriever.index`, so one collection reads the same from LangChain,
LlamaIndex, ``VC2LQdrant`` and ``vc2l search``.

- :class:`VC2LVectorStore`: a LangChain ``VectorStore`` over the project's store, embedded (Qdrant Edge, the
  default ``./vc2l_index``, as ``vc2l index`` writes it) or on a server. LangChain's own ``QdrantVectorStore``
  needs a ``QdrantClient``: use it (with :func:`vector_store`) against a server only.
- Interleaved snippets: a ``Document`` whose metadata has ``image_paths`` (list) or ``image_path`` (one path) is
  embedded as ONE vector of its text and images (:meth:`VC2LEmbeddings.embed_documents_with_images`):
  ``VC2LVectorStore.add_documents`` does it; ``QdrantVectorStore.add_documents`` only knows
  ``embed_documents(texts)``, so add such documents to it with :func:`add_snippets`.

Example::

    from vc2l_retriever.integrations.langchain import VC2LDocumentLoader, VC2LEmbeddings, VC2LVectorStore

    embeddings = VC2LEmbeddings("path/to/model")
    with VC2LVectorStore(embeddings, path="./vc2l_index") as store:     # or url=..., or client=QdrantClient(...)
        store.add_documents(VC2LDocumentLoader(["docs/"]).load())
        store.as_retriever().invoke("how often should the inverter be checked?")
        store.similarity_search_by_vector(embeddings.embed_image(["chart.png"])[0])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

from vc2l_retriever.integrations import require

require("langchain", "langchain_core", "langchain_qdrant", "qdrant_client")

import numpy as np  # noqa: E402
from langchain_core.document_loaders import BaseLoader  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_core.vectorstores.utils import maximal_marginal_relevance  # noqa: E402
from langchain_qdrant import QdrantVectorStore  # noqa: E402
from qdrant_client import QdrantClient, models  # noqa: E402

from vc2l_retriever import index as _index  # noqa: E402
from vc2l_retriever.hub import encode_lock, load_shared  # noqa: E402
from vc2l_retriever.ingest import IngestError, IngestOptions, ingest_snippets  # noqa: E402
from vc2l_retriever.inputs import Snippet, save_images  # noqa: E402
from vc2l_retriever.integrations._common import (  # noqa: E402
    METADATA_KEYS,
    equality_filter,
    external_id,
    foreign_identity,
    id_filter,
    point_key,
    remember_id,
)
from vc2l_retriever.store import Record, Store  # noqa: E402

__all__ = ["VC2LDocumentLoader", "VC2LEmbeddings", "VC2LVectorStore", "add_images", "add_snippets",
           "document_to_snippet", "embeddings_identity", "record_to_document", "snippet_to_document", "vector_store"]

logger = logging.getLogger(__name__)

_RESERVED = ("source", "page", "order", "kind", "image_paths", "image_path")



def snippet_to_document(snippet: Snippet, image_dir: str | os.PathLike[str] | None = None) -> Document:
    """A LangChain ``Document``: the text as ``page_content``, provenance and ``image_paths`` as metadata."""
    metadata = dict(snippet.metadata)
    metadata.update(source=snippet.source, page=snippet.page, order=snippet.order, kind=snippet.kind,
                    image_paths=save_images(snippet, image_dir))
    return Document(page_content=snippet.text, metadata=metadata)


def document_to_snippet(document: Document) -> Snippet:
    """Inverse of :func:`snippet_to_document`: text plus the images named by ``image_paths`` / ``image_path``."""
    md = document.metadata or {}
    paths = list(md.get("image_paths") or ([md["image_path"]] if md.get("image_path") else []))
    kind = "page" if md.get("kind") == "page" and paths else ""  # other kinds follow from the content
    return Snippet(text=document.page_content or "", images=[Path(p) for p in paths], source=md.get("source"),
                   page=md.get("page"), order=md.get("order"), kind=kind,
                   metadata={k: v for k, v in md.items() if k not in _RESERVED and not k.startswith("_")})


def with_image_files(snippet: Snippet, image_dir: str | os.PathLike[str] | None = None) -> Snippet:
    """The snippet with in-memory images replaced by their saved PNG files (see :func:`image_paths`)."""
    if all(isinstance(image, Path) for image in snippet.images):
        return snippet
    return replace(snippet, images=[Path(p) for p in save_images(snippet, image_dir)])


class VC2LEmbeddings(Embeddings):
    """VC2L embeddings for LangChain: text, images and interleaved text+image documents in one vector space.

    Args:
        model_name_or_path: A shipped model name, a folder saved with ``model.save()``, or a loaded VC2L
            ``SentenceTransformer``; ``None`` loads the shipped default. Names and paths are loaded once per
            (name, device) and shared by every instance.
        device: Torch device for a model loaded here (``None``: sentence-transformers chooses).
        batch_size: Inputs per forward pass.
        show_progress: Show a progress bar while encoding.
        normalize: Passed to ``encode`` as ``normalize_embeddings`` (VC2L models already output unit vectors).
    """

    def __init__(self, model_name_or_path: Any = None, *, device: str | None = None, batch_size: int = 32,
                 show_progress: bool = False, normalize: bool = True) -> None:
        if model_name_or_path is None or isinstance(model_name_or_path, (str, os.PathLike)):
            self.model = load_shared(model_name_or_path, device)
        else:
            self.model = model_name_or_path
        self.batch_size, self.show_progress, self.normalize = batch_size, show_progress, normalize

    def encode(self, inputs: Sequence[Any]) -> list[list[float]]:
        """Embed anything ``model.encode`` takes (str, Path, PIL image, dict, Snippet) as lists of floats."""
        if not inputs:
            return []
        with encode_lock(self.model):
            vectors = self.model.encode(list(inputs), batch_size=self.batch_size, convert_to_numpy=True,
                                        show_progress_bar=self.show_progress,
                                        normalize_embeddings=self.normalize)
        return vectors.astype(float).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts (rendered to pixels, like everything else)."""
        return self.encode(texts)  # a non-str item fails with its index, it is never silently stringified

    def embed_query(self, text: str) -> list[float]:
        """Embed a text query."""
        return self.encode([text])[0]

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """Embed image files (LangChain's image convention: ``uris`` are file paths)."""
        return self.encode([Path(u) for u in uris])

    def embed_documents_with_images(self, documents: Sequence[Document | Snippet]) -> list[list[float]]:
        """Embed documents; one with ``image_paths``/``image_path`` metadata becomes one text+image vector."""
        return self.encode([d if isinstance(d, Snippet) else document_to_snippet(d) for d in documents])


class VC2LDocumentLoader(BaseLoader):
    """PDFs, HTML, text and image files -> LangChain ``Document`` s, one per VC2L snippet, in reading order.

    Metadata: ``source`` (absolute path), ``page`` (PDF, 1-based), ``order``, ``kind``, ``image_paths`` and the
    ingest provenance (``heading``, ``section``...). Images that exist only in memory (PDF figures, scanned-page
    tiles) are saved as PNGs in ``image_dir`` (default: ``{tmp}/vc2l-images``) so that metadata holds paths.
    Files that cannot be read are logged, kept in :attr:`errors` and skipped; ``raise_errors=True`` raises instead.
    """

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                 options: IngestOptions | None = None, image_dir: str | os.PathLike[str] | None = None,
                 raise_errors: bool = False) -> None:
        self.paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.options, self.image_dir, self.raise_errors = options, image_dir, raise_errors
        self.errors: list[IngestError] = []

    def lazy_load(self) -> Iterator[Document]:
        """Yield documents file by file (a long PDF is streamed, not held in memory)."""
        self.errors = []
        for snippet in ingest_snippets(self.paths, self.options, errors=self.errors,
                                       raise_errors=self.raise_errors):
            yield snippet_to_document(snippet, self.image_dir)


def vector_store(client: QdrantClient, collection_name: str, embeddings: VC2LEmbeddings, *, create: bool = True,
                 **kwargs: Any) -> QdrantVectorStore:
    """A LangChain ``QdrantVectorStore`` over a VC2L collection (``vc2l index``'s, or a new one).

    The collection is created as the project's indexer does (dot product, the model's fingerprint in the collection
    metadata); opening one made by another model raises ``IndexMismatchError`` instead of mixing vectors. LangChain's
    store returns points as they are: a scanned page that ``vc2l index`` stored as several points can come back
    more than once, where :class:`VC2LVectorStore` returns it once.
    """
    identity = _index.model_identity(embeddings.model)
    store = _index.open_index(client=client, collection=collection_name)
    _index.ensure_collection(store, identity, create=create)
    distance = models.Distance.DOT if store.distance() == "dot" else models.Distance.COSINE
    kwargs.setdefault("distance", distance)
    return QdrantVectorStore(client=client, collection_name=collection_name, embedding=embeddings, **kwargs)


def add_snippets(store: QdrantVectorStore | VC2LVectorStore, items: Iterable[Snippet | Document], *,
                 batch_size: int = 32, image_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Embed snippets or documents (text, image or both as one vector) and upsert them into ``store``.

    Points get the project indexer's IDs (the same content at the same place gets the same ID, so adding twice
    writes nothing new) and its payload under the store's own keys, so the store returns them as ``Document`` s
    with ``image_paths`` in their metadata. Returns the point IDs in input order.
    """
    if isinstance(store, VC2LVectorStore):
        documents = (x if isinstance(x, Document) else snippet_to_document(x, image_dir) for x in items)
        ids: list[str] = []
        while batch := list(islice(documents, batch_size)):
            ids += store.add_documents(batch, batch_size=batch_size)
        return ids
    embeddings = store.embeddings
    if not isinstance(embeddings, VC2LEmbeddings):
        raise TypeError(f"the store's embeddings must be VC2LEmbeddings, got {type(embeddings).__name__}")
    ids: list[str] = []
    iterator = iter(items)
    while batch := list(islice(iterator, batch_size)):
        # In-memory images become files first: the payload stores paths, and the vector is made from the same pixels.
        snippets = [document_to_snippet(x) if isinstance(x, Document) else with_image_files(x, image_dir)
                    for x in batch]
        vectors = embeddings.embed_documents_with_images(snippets)
        points = [_point(store, snippet, vector) for snippet, vector in zip(snippets, vectors, strict=True)]
        store.client.upsert(store.collection_name, points=points, wait=True)
        ids += [str(p.id) for p in points]
    return ids


def add_images(store: QdrantVectorStore | VC2LVectorStore, paths: Iterable[str | os.PathLike[str]], *,
               batch_size: int = 32) -> list[str]:
    """Embed image files and upsert them; search returns them as ``Document`` s (empty text, ``image_paths``)."""
    snippets = (Snippet(images=[Path(p)], source=os.path.abspath(p)) for p in paths)
    return add_snippets(store, snippets, batch_size=batch_size)


def _point(store: QdrantVectorStore, snippet: Snippet, vector: list[float]) -> models.PointStruct:
    content = _index.content_hash(snippet)
    payload = _index.make_payload(snippet, content=content, thumbnails="none")
    payload[store.content_payload_key] = payload.pop("page_content")
    payload[store.metadata_payload_key] = payload.pop("metadata")
    return models.PointStruct(id=_index.point_id(snippet, content), vector={store.vector_name: vector},
                              payload=payload)


# --- A LangChain vector store over the project's store (embedded or server) ---------------------------------------


def embeddings_identity(embeddings: Embeddings) -> _index.ModelIdentity:
    """The model identity a collection records: a VC2L model's fingerprint, else class, model name and size
    (one probe embedding measures the size)."""
    if isinstance(embeddings, VC2LEmbeddings):
        return _index.model_identity(embeddings.model)
    return foreign_identity(embeddings, len(embeddings.embed_query("vc2l dimension probe")))


def record_to_document(record: Record) -> Document:
    """A point as a ``Document``: ``id`` the caller's ID (or the point ID), metadata from the payload.

    Points written by :class:`VC2LVectorStore` return exactly the metadata keys they were given; points written by
    ``vc2l index`` / ``VC2LQdrant`` return their whole provenance (``source``, ``page``, ``kind``, ``image_paths``...).
    """
    payload = record.payload
    metadata = dict(payload.get("metadata") or {})
    book = payload.get(_index.METADATA_KEY)
    given = book.get(METADATA_KEYS) if isinstance(book, dict) else None
    if isinstance(given, list):
        metadata = {k: metadata[k] for k in given if k in metadata}
    return Document(page_content=payload.get("page_content") or "", metadata=metadata, id=external_id(record))


def _cosine_relevance(score: float) -> float:
    """Cosine similarity in [-1, 1] -> LangChain's relevance in [0, 1] (same order)."""
    return (score + 1.0) / 2.0


class VC2LVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over the project's index: Qdrant Edge in this process or a Qdrant server.

    The points have the payload and IDs of :mod:`vc2l_retriever.index`, so an index written by ``vc2l index`` /
    ``VC2LQdrant`` is searchable here, and documents added here are found by ``vc2l search`` and LlamaIndex.
    With :class:`VC2LEmbeddings`, a document whose metadata has ``image_paths`` / ``image_path`` is embedded as ONE
    text+image vector. Any other LangChain ``Embeddings`` works too (text only), under its own model identity.

    Args:
        embedding: The embeddings; the collection records their model and refuses vectors of another.
        store: An open :class:`~vc2l_retriever.store.Store` (left open by :meth:`close`). Otherwise one is opened:
        path: Embedded index folder (default ``./vc2l_index``) or ``":memory:"``.
        url, api_key: A Qdrant server instead.
        client: An existing ``QdrantClient`` (not closed by :meth:`close`).
        collection_name: The collection (``vc2l``, as ``vc2l index`` writes).
        create: Create the collection if it is missing (``False``: raise ``CollectionNotFoundError``).
        thumbnails: For documents with images: ``"bytes"`` stores a 128 px preview (as ``vc2l index`` does),
            ``"none"`` / ``"path"`` store the image paths only.

    IDs: caller IDs are kept (a non-UUID ID such as ``"1"`` is stored under a UUIDv5 of it and returned as given);
    without one, a document gets the project's content-addressed ID, so adding it again writes nothing new.
    Filters: a ``qdrant_client.models.Filter`` on payload keys (``metadata.source``), or ``{key: value}`` for
    metadata equality (a list value matches any of its items).

    Raises:
        IndexMismatchError: The collection was made by another model or vector size.
        IndexInUseError: The embedded folder is open in another process or store.
    """

    def __init__(self, embedding: Embeddings, store: Store | None = None, *,
                 path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None,
                 client: QdrantClient | None = None, collection_name: str = _index.DEFAULT_COLLECTION,
                 create: bool = True, thumbnails: _index.Thumbnails = "bytes") -> None:
        if store is not None and (path, url, api_key, client) != (None, None, None, None):
            raise ValueError("give either store= or path=/url=/client=, not both")
        self.embedding, self.thumbnails = embedding, thumbnails
        self._owns_store = store is None
        self.store: Store = store if store is not None else _index.open_index(
            path, url=url, api_key=api_key, collection=collection_name, client=client)
        try:
            _index.ensure_collection(self.store, embeddings_identity(embedding), create=create)
            # A VC2L model writes a page as several points where the collection ranks by dot product (read once).
            self._points = isinstance(embedding, VC2LEmbeddings) and self.store.distance() == "dot"
        except BaseException:
            self.close()  # release the embedded folder's lock
            raise

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> VC2LVectorStore:
        """Open (or create) the collection from ``kwargs`` (see the class) and add ``texts``."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # Writing ---------------------------------------------------------------------------------------------------

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Embed and upsert texts (with ``image_paths`` metadata: text and images as one vector)."""
        texts = list(texts)
        metadatas = metadatas if metadatas is not None else [{} for _ in texts]
        if len(metadatas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metadatas)} metadatas")
        documents = [Document(page_content=t, metadata=m or {}) for t, m in zip(texts, metadatas, strict=True)]
        return self.add_documents(documents, ids=ids, **kwargs)

    def add_documents(self, documents: list[Document], *, ids: Sequence[str | None] | None = None,
                      batch_size: int = 32, **kwargs: Any) -> list[str]:
        """Embed and upsert documents; returns their IDs (``ids``, else ``Document.id``, else content-addressed)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        given = list(ids) if ids is not None else [d.id for d in documents]
        if len(given) != len(documents):
            raise ValueError(f"{len(documents)} documents but {len(given)} ids")
        written: list[str] = []
        for start in range(0, len(documents), max(1, batch_size)):
            batch = documents[start:start + batch_size]
            snippets = [replace(document_to_snippet(d), metadata=dict(d.metadata or {})) for d in batch]
            records = [self._records(d, s, v, i) for d, s, v, i in
                       zip(batch, snippets, self._embed(batch, snippets), given[start:start + batch_size],
                           strict=True)]
            if self._points:  # a document written again may have been a page of more points: those go first
                firsts = [points[0].id for points, _ in records]
                self.store.delete(models.Filter(must=[models.FieldCondition(
                    key=f"{_index.METADATA_KEY}.of", match=models.MatchAny(any=firsts))]))
            self.store.upsert([p for points, _ in records for p in points])
            written += [i for _, i in records]
        return written

    def _embed(self, documents: list[Document], snippets: list[Snippet]) -> list[Any]:
        """Each document's points: a VC2L model's (several for a page, in a dot-product collection), else one."""
        if self._points:
            return self.embedding.model.encode_points(snippets, batch_size=self.embedding.batch_size)
        if isinstance(self.embedding, VC2LEmbeddings):
            return [[v] for v in self.embedding.embed_documents_with_images(snippets)]
        return [[v] for v in self.embedding.embed_documents([d.page_content for d in documents])]  # text only

    def _records(self, document: Document, snippet: Snippet, vectors: Any,
                 id_: str | None) -> tuple[list[Record], str]:
        content = _index.content_hash(snippet)
        id_ = id_ or _index.point_id(snippet, content)
        # The snippet carries every caller key; make_payload recomputes the provenance keys it reserves.
        payload = _index.make_payload(snippet, content=content, thumbnails=self.thumbnails)
        payload[_index.METADATA_KEY][METADATA_KEYS] = _index.json_safe([str(k) for k in document.metadata or {}])
        remember_id(payload, id_)
        return _index.snippet_points(point_key(id_), payload, vectors), id_

    def delete(self, ids: list[str] | None = None, *, filter: models.Filter | dict | None = None,
               **kwargs: Any) -> bool:
        """Delete points by ID and/or by filter (never everything: with neither, raise ``ValueError``)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        if ids is None and filter is None:
            raise ValueError("give ids or filter; to empty the collection delete it (vc2l index tools) instead")
        if ids:
            self.store.delete(id_filter(list(ids)))
        if filter is not None:
            self.store.delete(equality_filter(filter))
        return True

    # Reading ---------------------------------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids``, in that order (missing IDs are left out)."""
        keys = [point_key(i) for i in ids]
        found = {r.id: r for r in self.store.retrieve(list(dict.fromkeys(keys)))}
        return [record_to_document(found[k]) for k in dict.fromkeys(keys) if k in found]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        """Best ``k`` documents with their similarity (the cosine of unit vectors; a scanned page is scored by its best
        point, ``index.nearest``); ``filter=``, ``score_threshold=``."""
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def similarity_search_with_score_by_vector(
            self, embedding: list[float], k: int = 4, *, filter: models.Filter | dict | None = None,
            score_threshold: float | None = None, offset: int = 0) -> list[tuple[Document, float]]:
        """Best ``k`` documents for a vector (say, ``VC2LEmbeddings.embed_image``), with their similarities."""
        records = _index.nearest(self.store, [float(v) for v in embedding], k, filter=equality_filter(filter),
                                 score_threshold=score_threshold, offset=offset)
        return [(record_to_document(r), r.score) for r in records]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      **kwargs: Any) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(self.embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, **kwargs)

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, *,
                                                filter: models.Filter | dict | None = None) -> list[Document]:
        """``k`` of the best ``fetch_k`` documents, chosen for relevance and diversity (MMR)."""
        records = _index.nearest(self.store, [float(v) for v in embedding], fetch_k, filter=equality_filter(filter))
        stored = {r.id: r.vector for r in self.store.retrieve([r.id for r in records], with_vectors=True,
                                                              with_payload=False)}
        records = [r for r in records if stored.get(r.id)]  # a point deleted meanwhile drops out
        if not records:
            return []
        chosen = maximal_marginal_relevance(np.array(embedding, dtype=np.float32), [stored[r.id] for r in records],
                                            lambda_mult=lambda_mult, k=k)
        return [record_to_document(records[i]) for i in chosen]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return _cosine_relevance

    def close(self) -> None:
        """Close the store if this object opened it (unlocks an embedded folder)."""
        if self._owns_store and getattr(self, "store", None) is not None:
            self.store.close()

    def __enter__(self) -> VC2LVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
