"""LangChain adapter: VC2L as a LangChain ``Embeddings``, a document loader, and image/snippet writes to Qdrant.

Thin by design: embedding is ``model.encode``, loading is :func:`vc2l_retriever.ingest.ingest`, and points written
to Qdrant get the payload and IDs of :mod:`vc2l_retriever.index`, so a collection made here, by ``vc2l index`` or by
``VC2LQdrant`` reads the same from LangChain's ``QdrantVectorStore``, LlamaIndex and the project's own search.

Interleaved snippets: a ``Document`` whose metadata has ``image_paths`` (list) or ``image_path`` (one path) is
embedded as ONE vector of its text and images (:meth:`VC2LEmbeddings.embed_documents_with_images`,
:func:`add_snippets`). ``QdrantVectorStore.add_documents`` only knows ``embed_documents(texts)`` and would embed the
text alone, so add such documents with :func:`add_snippets`.

Example::

    from qdrant_client import QdrantClient
    from vc2l_retriever.integrations.langchain import VC2LDocumentLoader, VC2LEmbeddings, add_snippets, vector_store

    embeddings = VC2LEmbeddings("path/to/model")
    store = vector_store(QdrantClient(path="./lc_index"), "docs", embeddings)
    add_snippets(store, VC2LDocumentLoader(["docs/"]).lazy_load())
    store.as_retriever().invoke("how often should the inverter be checked?")
    store.similarity_search_by_vector(embeddings.embed_image(["chart.png"])[0])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

from vc2l_retriever.integrations import require

require("langchain", "langchain_core", "langchain_qdrant", "qdrant_client")

from langchain_core.document_loaders import BaseLoader  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_qdrant import QdrantVectorStore  # noqa: E402
from qdrant_client import QdrantClient, models  # noqa: E402

from vc2l_retriever import index as _index  # noqa: E402
from vc2l_retriever.hub import encode_lock, load_shared  # noqa: E402
from vc2l_retriever.ingest import IngestError, IngestOptions, ingest_snippets  # noqa: E402
from vc2l_retriever.inputs import Snippet, save_images  # noqa: E402

__all__ = ["VC2LDocumentLoader", "VC2LEmbeddings", "add_images", "add_snippets", "document_to_snippet",
           "snippet_to_document", "vector_store"]

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

    The collection is created as the project's indexer does (cosine, the model's fingerprint in the collection
    metadata); opening one made by another model raises ``IndexMismatchError`` instead of mixing vectors.
    """
    identity = _index.model_identity(embeddings.model)
    _index.ensure_collection(client, collection_name, identity, create=create)
    return QdrantVectorStore(client=client, collection_name=collection_name, embedding=embeddings, **kwargs)


def add_snippets(store: QdrantVectorStore, items: Iterable[Snippet | Document], *, batch_size: int = 32,
                 image_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Embed snippets or documents (text, image or both as one vector) and upsert them into ``store``.

    Points get the project indexer's IDs (the same content at the same place gets the same ID, so adding twice
    writes nothing new) and its payload under the store's own keys, so the store returns them as ``Document`` s
    with ``image_paths`` in their metadata. Returns the point IDs in input order.
    """
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


def add_images(store: QdrantVectorStore, paths: Iterable[str | os.PathLike[str]], *,
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
