"""LlamaIndex adapter: VC2L as a ``MultiModalEmbedding``, a reader, and vector stores over the VC2L index.

Thin by design: embedding is ``model.encode`` and reading is :func:`vc2l_retriever.ingest.ingest`. One encoder
serves as both ``embed_model`` and ``image_embed_model``: text and images share one vector space.

- :class:`VC2LEmbedding`: text, query and image embeddings, sync and async, batched by ``embed_batch_size``; the
  base class adds callbacks, progress bars and caching around our ``_get_*`` methods.
- :class:`VC2LReader`: files -> ``Document`` (text, or text+image with ``image_paths`` metadata) and
  ``ImageDocument`` (images and scanned-page tiles, ``image_path`` set: paths, never base64).
- Interleaved snippets: LlamaIndex hands embedding models strings only, so a node whose metadata has
  ``image_paths`` (or ``image_path``) is embedded as ONE text+image vector when the encoder runs as a
  transformation: ``transformations=[SentenceSplitter(), embed_model]`` (or ``embed_model(nodes)``) before the
  index is built; indexes keep embeddings that nodes already have.
- :class:`VC2LVectorStore`: a ``BasePydanticVectorStore`` over the project's store, embedded (Qdrant Edge, the
  default ``./vc2l_index``, as ``vc2l index`` writes it) or on a server. It reads the indexer's points as
  ``TextNode`` / ``ImageNode`` and writes nodes with the project's payload, so ``vc2l search`` and LangChain's
  ``VC2LVectorStore`` find them; metadata filters apply to node metadata.
- :class:`VC2LQdrantVectorStore`: LlamaIndex's own ``QdrantVectorStore`` (it needs a ``QdrantClient``: a server)
  that also reads collections written by ``vc2l index`` / ``VC2LQdrant`` (LangChain-shaped payload) as
  ``TextNode`` / ``ImageNode`` with flat metadata. Filter those collections with keys such as ``metadata.source``.

Example::

    embed_model = VC2LEmbedding("path/to/model")
    store = VC2LVectorStore(path="./vc2l_index", embed_model=embed_model)      # or url=..., client=...
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)  # what `vc2l index` wrote
    index.as_retriever(similarity_top_k=3).retrieve("how often should the inverter be checked?")
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vc2l_retriever.integrations import require

require("llamaindex", "llama_index.core", "llama_index.vector_stores.qdrant", "qdrant_client")

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding  # noqa: E402
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.callbacks import CBEventType, EventPayload  # noqa: E402
from llama_index.core.embeddings import MultiModalEmbedding  # noqa: E402
from llama_index.core.readers.base import BaseReader  # noqa: E402
from llama_index.core.schema import BaseNode, Document, ImageDocument, ImageNode, MetadataMode, TextNode  # noqa: E402
from llama_index.core.utils import get_tqdm_iterable  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict  # noqa: E402
from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: E402
from PIL import Image  # noqa: E402
from qdrant_client import QdrantClient, models  # noqa: E402

from vc2l_retriever import index as _index  # noqa: E402
from vc2l_retriever.hub import encode_lock, load_shared  # noqa: E402
from vc2l_retriever.ingest import IngestError, IngestOptions, ingest_snippets  # noqa: E402
from vc2l_retriever.inputs import Snippet, save_images  # noqa: E402
from vc2l_retriever.integrations._common import (  # noqa: E402
    external_id,
    field_equals,
    foreign_identity,
    metadata_key,
    point_key,
    remember_id,
)
from vc2l_retriever.store import Record, Store  # noqa: E402

__all__ = ["VC2LEmbedding", "VC2LQdrantVectorStore", "VC2LReader", "VC2LVectorStore", "embedding_identity",
           "llamaindex_payload_keys", "metadata_filters_to_qdrant", "node_from_payload", "node_payload",
           "record_to_node", "vector_store"]

logger = logging.getLogger(__name__)

LLM_HIDDEN_KEYS = ["order", "kind", "image_paths", "file_hash", "bbox", "element", "page_count"]


def _as_image(image: Any) -> Image.Image | Path:
    """LlamaIndex's ``ImageType`` (a file path ``str`` or a ``BytesIO``), a ``Path`` or a PIL image."""
    if isinstance(image, (Image.Image, Path)):
        return image
    if isinstance(image, str):
        return Path(image)
    if isinstance(image, io.IOBase):
        return Image.open(image)  # decoded (with bounds) by open_image at render time
    raise TypeError(f"cannot embed a {type(image).__name__} as an image; pass a file path, BytesIO or PIL image")


def node_input(node: BaseNode) -> Any:
    """What one node is embedded as: its text, its image, or both as one interleaved snippet."""
    text = node.get_content(metadata_mode=MetadataMode.EMBED)
    paths = node.metadata.get("image_paths") or ([node.metadata["image_path"]] if node.metadata.get("image_path")
                                                 else [])
    images: list[Any] = [Path(p) for p in paths]
    if not images and isinstance(node, ImageNode) and (node.image or node.image_path):
        images = [_as_image(node.resolve_image())]
    if not images:
        return text
    if not node.get_content(metadata_mode=MetadataMode.NONE).strip():
        return images[0] if len(images) == 1 else {"image": images}  # metadata alone is not the image's text
    return {"text": text, "image": images}


class VC2LEmbedding(MultiModalEmbedding):
    """VC2L embeddings for LlamaIndex: pass one instance as both ``embed_model`` and ``image_embed_model``.

    Args:
        model_name_or_path: A shipped model name, a folder saved with ``model.save()``, or a loaded VC2L
            ``SentenceTransformer``; ``None`` loads the shipped default. Names and paths are loaded once per
            (name, device) and shared.
        device: Torch device for a model loaded here.
        embed_batch_size: Inputs per forward pass.
        normalize: Passed to ``encode`` as ``normalize_embeddings`` (VC2L models already output unit vectors).
        **kwargs: Other ``BaseEmbedding`` fields (``callback_manager``, ``num_workers``...).
    """

    device: str | None = Field(default=None, description="Torch device of a model loaded by name or path.")
    normalize: bool = Field(default=True, description="L2-normalise the embeddings.")
    _model: Any = PrivateAttr()

    def __init__(self, model_name_or_path: Any = None, *, device: str | None = None, embed_batch_size: int = 32,
                 normalize: bool = True, **kwargs: Any) -> None:
        if model_name_or_path is None or isinstance(model_name_or_path, (str, os.PathLike)):
            model = load_shared(model_name_or_path, device)
            kwargs.setdefault("model_name", os.fspath(model_name_or_path or "vc2l-default"))
        else:
            model = model_name_or_path
            kwargs.setdefault("model_name", "vc2l")
        super().__init__(device=device, embed_batch_size=embed_batch_size, normalize=normalize, **kwargs)
        self._model = model

    @classmethod
    def class_name(cls) -> str:
        return "VC2LEmbedding"

    @property
    def model(self) -> Any:
        """The VC2L ``SentenceTransformer``."""
        return self._model

    def encode(self, inputs: Sequence[Any]) -> list[Embedding]:
        """Embed anything ``model.encode`` takes (str, Path, PIL image, dict, Snippet) as lists of floats."""
        if not inputs:
            return []
        with encode_lock(self._model):
            vectors = self._model.encode(list(inputs), batch_size=self.embed_batch_size, convert_to_numpy=True,
                                         show_progress_bar=False, normalize_embeddings=self.normalize)
        return vectors.astype(float).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.encode([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.encode(texts)

    def _get_image_embedding(self, img_file_path: Any) -> Embedding:
        return self.encode([_as_image(img_file_path)])[0]

    def _get_image_embeddings(self, img_file_paths: list[Any]) -> list[Embedding]:
        return self.encode([_as_image(p) for p in img_file_paths])

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_image_embedding(self, img_file_path: Any) -> Embedding:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    async def _aget_image_embeddings(self, img_file_paths: list[Any]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """As a transformation: embed each node as text, image or one text+image snippet (see module docs)."""
        inputs = [node_input(node) for node in nodes]
        starts = range(0, len(inputs), self.embed_batch_size)
        for start in get_tqdm_iterable(starts, kwargs.get("show_progress", False), "Generating embeddings"):
            batch = nodes[start:start + self.embed_batch_size]
            with self.callback_manager.event(CBEventType.EMBEDDING,
                                             payload={EventPayload.SERIALIZED: self.to_payload()}) as event:
                vectors = self.encode(inputs[start:start + self.embed_batch_size])
                event.on_end(payload={EventPayload.CHUNKS: [n.get_content(MetadataMode.EMBED) for n in batch],
                                      EventPayload.EMBEDDINGS: vectors})
            for node, vector in zip(batch, vectors, strict=True):
                node.embedding = vector
        return nodes

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Async :meth:`__call__`."""
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)


# --- Reading files ------------------------------------------------------------------------------------------------



def snippet_to_document(snippet: Snippet, image_dir: str | os.PathLike[str] | None = None) -> Document:
    """``Document`` for text and text+image snippets, ``ImageDocument`` for images and page tiles without text.

    The ID is the project indexer's point ID. No metadata is rendered into the embedding (VC2L would draw it on
    the canvas); ``source`` and ``page`` stay visible to LLMs for citations.
    """
    paths = save_images(snippet, image_dir)
    metadata = {**snippet.metadata, "source": snippet.source, "page": snippet.page, "order": snippet.order,
                "kind": snippet.kind, "image_paths": paths}
    image_only = bool(paths) and not snippet.text.strip()
    # Indexes drop nodes whose embed content is empty, so an image without text shows its source there; the
    # VC2L encoder ignores metadata when a node has images but no text of its own (see node_input).
    shown = {"source"} if image_only else set()
    common: dict[str, Any] = {"id_": _index.point_id(snippet), "text": snippet.text, "metadata": metadata,
                              "excluded_embed_metadata_keys": [k for k in metadata if k not in shown],
                              "excluded_llm_metadata_keys": [k for k in metadata if k in LLM_HIDDEN_KEYS]}
    return ImageDocument(image_path=paths[0], **common) if image_only else Document(**common)


class VC2LReader(BaseReader):
    """PDFs, HTML, text and image files -> LlamaIndex documents, one per VC2L snippet, in reading order.

    Args:
        options: Ingest options (snippet size, PDF password...).
        image_dir: Where in-memory images (PDF figures, scanned-page tiles) are saved as PNGs, so documents hold
            paths (default: ``{tmp}/vc2l-images``).
        raise_errors: Raise the first unreadable file's ``IngestError`` instead of logging it and going on; either
            way the errors of the last load are in :attr:`errors`.
    """

    def __init__(self, options: IngestOptions | None = None, image_dir: str | os.PathLike[str] | None = None,
                 raise_errors: bool = False) -> None:
        self.options, self.image_dir, self.raise_errors = options, image_dir, raise_errors
        self.errors: list[IngestError] = []

    def lazy_load_data(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                       **load_kwargs: Any) -> Iterator[Document]:
        """Yield documents file by file from files and folders."""
        self.errors = []
        targets = paths if isinstance(paths, (str, os.PathLike)) else list(paths)
        for snippet in ingest_snippets(targets, self.options, errors=self.errors, raise_errors=self.raise_errors):
            yield snippet_to_document(snippet, self.image_dir)


# --- Qdrant collections written by the project's indexer -----------------------------------------------------------


def llamaindex_payload_keys(payload: dict[str, Any], point_id: str) -> dict[str, Any]:
    """Extra payload keys that let the stock ``QdrantVectorStore`` read an indexer point at full fidelity.

    ``_node_content`` (the node as LlamaIndex's JSON: flat metadata, and for points with images an ``ImageNode``
    whose ``image_path`` is the first image file, or whose ``image`` is the stored thumbnail when there is no
    file), ``_node_type``, and ``doc_id`` / ``document_id`` / ``ref_doc_id`` set to the source file, so that
    ``delete(ref_doc_id=source)`` removes a document's points. Plain ``json``: no LlamaIndex needed to write them.
    """
    metadata = dict(payload.get("metadata") or {})
    node: dict[str, Any] = {"id_": point_id, "text": payload.get("page_content") or "", "metadata": metadata,
                            "excluded_embed_metadata_keys": list(metadata),
                            "excluded_llm_metadata_keys": [k for k in metadata if k in LLM_HIDDEN_KEYS]}
    node_type = "ImageNode"
    if metadata.get("image_paths"):
        node["image_path"] = metadata["image_paths"][0]
    elif payload.get("thumbnail"):
        node.update(image=payload["thumbnail"], image_mimetype="image/png")
    else:
        node_type = "TextNode"
    source = str(metadata.get("source") or "None")
    return {"_node_content": json.dumps(node, ensure_ascii=False), "_node_type": node_type,
            "doc_id": source, "document_id": source, "ref_doc_id": source}


def node_from_payload(payload: dict[str, Any], point_id: str) -> TextNode:
    """The node for a point written by ``vc2l index`` / ``VC2LQdrant`` / the LangChain adapter.

    ``TextNode``, or ``ImageNode`` for points with images, with flat metadata (``source``, ``page``, ``order``,
    ``kind``, ``image_paths``, caller keys); the bookkeeping (``vc2l``) and the thumbnail stay out of the metadata.
    """
    keys = llamaindex_payload_keys(payload, point_id)
    node_class = ImageNode if keys["_node_type"] == "ImageNode" else TextNode
    return node_class.from_json(keys["_node_content"])


class VC2LQdrantVectorStore(QdrantVectorStore):
    """``QdrantVectorStore`` that also reads points written by the project's indexer (see :func:`node_from_payload`).

    Points LlamaIndex wrote itself (with ``_node_content``) are read as usual.
    """

    @classmethod
    def class_name(cls) -> str:
        return "VC2LQdrantVectorStore"

    def parse_to_query_result(self, response: list[Any]) -> VectorStoreQueryResult:
        """Nodes for the points: the indexer's payload layout by :func:`node_from_payload`, others as usual."""
        nodes, similarities, ids = [], [], []
        for point in response:
            payload = point.payload or {}
            if "_node_content" in payload or "page_content" not in payload:
                parsed = super().parse_to_query_result([point])
                nodes += parsed.nodes
                similarities += parsed.similarities or []
                ids += parsed.ids or []
                continue
            node = node_from_payload(payload, str(point.id))
            if isinstance(point.vector, list):
                node.embedding = point.vector
            nodes.append(node)
            similarities.append(getattr(point, "score", 1.0))
            ids.append(str(point.id))
        return VectorStoreQueryResult(nodes=nodes, similarities=similarities, ids=ids)

def vector_store(client: QdrantClient, collection_name: str, embed_model: VC2LEmbedding, *, create: bool = True,
                 **kwargs: Any) -> VC2LQdrantVectorStore:
    """A :class:`VC2LQdrantVectorStore` over a VC2L collection (``vc2l index``'s, or a new one).

    The collection is created as the project's indexer does (dot product, the model's fingerprint in the collection
    metadata); opening one made by another model raises ``IndexMismatchError`` instead of mixing vectors. LlamaIndex's
    store returns points as they are: a scanned page that ``vc2l index`` stored as several points can come back
    more than once, where :class:`VC2LVectorStore` returns it once.
    """
    _index.ensure_collection(_index.open_index(client=client, collection=collection_name),
                             _index.model_identity(embed_model.model), create=create)
    return VC2LQdrantVectorStore(collection_name=collection_name, client=client, **kwargs)



# --- A LlamaIndex vector store over the project's store (embedded or server) --------------------------------------

# LlamaIndex's own keys, written beside the project's payload so nodes come back exactly as they were added.
_NODE_KEYS = ("_node_content", "_node_type", "doc_id", "document_id", "ref_doc_id")
_RANGES = {FilterOperator.GT: "gt", FilterOperator.GTE: "gte", FilterOperator.LT: "lt", FilterOperator.LTE: "lte"}


def embedding_identity(embed_model: BaseEmbedding) -> _index.ModelIdentity:
    """The model identity a collection records: a VC2L model's fingerprint, else class, model name and size
    (one probe embedding measures the size)."""
    if isinstance(embed_model, VC2LEmbedding):
        return _index.model_identity(embed_model.model)
    return foreign_identity(embed_model, len(embed_model.get_text_embedding("vc2l dimension probe")))


def node_snippet(node: BaseNode) -> Snippet:
    """The snippet a node stands for: its text, its images (``image_paths`` / ``image_path`` metadata, an
    ``ImageNode``'s file or base64 image; never a URL, which would be downloaded) and its metadata."""
    md = dict(node.metadata or {})
    paths = list(md.get("image_paths") or ([md["image_path"]] if md.get("image_path") else []))
    if not paths and isinstance(node, ImageNode) and node.image_path:
        paths = [node.image_path]
    images: list[Any] = [Path(p) for p in paths]
    if not images and isinstance(node, ImageNode) and node.image:
        images = [_as_image(node.resolve_image())]
    return Snippet(text=node.get_content(metadata_mode=MetadataMode.NONE), images=images, source=md.get("source"),
                   page=md.get("page"), order=md.get("order"),
                   kind="page" if md.get("kind") == "page" and images else "", metadata=md)


def node_payload(node: BaseNode, thumbnails: _index.Thumbnails = "bytes") -> dict[str, Any]:
    """The project's payload for a node (read by ``vc2l search``, ``VC2LQdrant`` and LangChain) plus LlamaIndex's
    node keys (``_node_content``, ``ref_doc_id``...), so LlamaIndex reads the node back unchanged."""
    snippet = node_snippet(node)
    payload = _index.make_payload(snippet, content=_index.content_hash(snippet), thumbnails=thumbnails)
    keys = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)  # the text is page_content
    payload.update({k: keys[k] for k in _NODE_KEYS})
    remember_id(payload, node.node_id)
    return payload


def record_to_node(record: Record) -> BaseNode:
    """A point as a node: as LlamaIndex wrote it, or (``vc2l index``, LangChain) by :func:`node_from_payload`."""
    payload = record.payload
    if "_node_content" in payload:
        return metadata_dict_to_node(payload, text=payload.get("page_content") or "")
    return node_from_payload(payload, external_id(record))


def ref_doc_filter(ref_doc_ids: Sequence[str]) -> models.Filter:
    """Points of these documents: LlamaIndex's ``ref_doc_id``, or the source file (the indexer's document)."""
    ids = list(ref_doc_ids)
    return models.Filter(should=[models.FieldCondition(key="ref_doc_id", match=models.MatchAny(any=ids)),
                                 models.FieldCondition(key=_index.SOURCE_KEY, match=models.MatchAny(any=ids))])


def metadata_filters_to_qdrant(filters: MetadataFilters | None) -> models.Filter | None:
    """LlamaIndex ``MetadataFilters`` as a Qdrant filter on ``metadata.<key>`` (nested filters, AND/OR/NOT)."""
    if filters is None or not filters.filters:
        return None
    conditions = [metadata_filters_to_qdrant(f) if isinstance(f, MetadataFilters) else _condition(f)
                  for f in filters.filters]
    conditions = [c for c in conditions if c is not None]
    if filters.condition == FilterCondition.OR:
        return models.Filter(should=conditions)
    if filters.condition == FilterCondition.NOT:
        return models.Filter(must_not=conditions)
    return models.Filter(must=conditions)


def _condition(f: MetadataFilter) -> Any:
    key, op, value = metadata_key(f.key), f.operator, f.value
    many = list(value) if isinstance(value, list) else [value]
    if op in _RANGES:
        return models.FieldCondition(key=key, range=models.Range(**{_RANGES[op]: value}))
    if op in (FilterOperator.EQ, FilterOperator.CONTAINS):  # a stored list matches when one of its items does
        return field_equals(key, value)
    if op in (FilterOperator.IN, FilterOperator.ANY):
        return field_equals(key, many)
    if op in (FilterOperator.NE, FilterOperator.NIN):  # must_not: a point without the key also passes, as in LlamaIndex
        return models.Filter(must_not=[field_equals(key, value if op == FilterOperator.NE else many)])
    if op == FilterOperator.ALL:
        return models.Filter(must=[field_equals(key, v) for v in many])
    if op == FilterOperator.TEXT_MATCH:
        return models.FieldCondition(key=key, match=models.MatchText(text=str(value)))
    if op == FilterOperator.IS_EMPTY:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
    raise ValueError(f"metadata filter operator {op.value!r} is not supported by VC2LVectorStore")


class VC2LVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over the project's index: Qdrant Edge in this process or a Qdrant server.

    Reads points written by ``vc2l index`` / ``VC2LQdrant`` / LangChain as ``TextNode`` / ``ImageNode`` (see
    :func:`node_from_payload`) and nodes it wrote as they were added; the nodes it writes carry the project's
    payload, so ``vc2l search`` finds them. LlamaIndex's own ``QdrantVectorStore`` needs a ``QdrantClient``: use it
    (or :class:`VC2LQdrantVectorStore`) against a server only.

    Args:
        store: An open :class:`~vc2l_retriever.store.Store` (left open by :meth:`close`). Otherwise one is opened:
        embed_model: The embedding model; the collection is created for it (or checked against it). Without one
            the collection must already exist.
        path: Embedded index folder (default ``./vc2l_index``) or ``":memory:"``.
        url, api_key: A Qdrant server instead.
        client: An existing ``QdrantClient`` (not closed by :meth:`close`).
        collection_name: The collection (``vc2l``, as ``vc2l index`` writes).
        create: Create the collection if it is missing (needs ``embed_model``).
        thumbnails: For nodes with images: ``"bytes"`` stores a 128 px preview (as ``vc2l index`` does).

    ``delete(ref_doc_id)`` removes a document's nodes (for indexer points the document is the source file).
    Filters: ``MetadataFilters`` on node metadata, or ``qdrant_filters=`` (a ``models.Filter`` on payload keys).
    """

    stores_text: bool = True
    flat_metadata: bool = False
    collection_name: str = Field(default=_index.DEFAULT_COLLECTION, description="The Qdrant collection.")
    thumbnails: str = Field(default="bytes", description="Previews for nodes with images: bytes, path or none.")
    _store: Any = PrivateAttr()
    _owns_store: bool = PrivateAttr(default=False)

    def __init__(self, store: Store | None = None, *, embed_model: BaseEmbedding | None = None,
                 path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None,
                 client: QdrantClient | None = None, collection_name: str = _index.DEFAULT_COLLECTION,
                 create: bool = True, thumbnails: _index.Thumbnails = "bytes", **kwargs: Any) -> None:
        if store is not None and (path, url, api_key, client) != (None, None, None, None):
            raise ValueError("give either store= or path=/url=/client=, not both")
        opened = store if store is not None else _index.open_index(path, url=url, api_key=api_key,
                                                                    collection=collection_name, client=client)
        try:
            super().__init__(collection_name=opened.name, thumbnails=thumbnails, **kwargs)
            self._store, self._owns_store = opened, store is None
            if embed_model is not None:
                _index.ensure_collection(opened, embedding_identity(embed_model), create=create)
            elif not opened.exists():
                raise _index.CollectionNotFoundError(
                    f"no collection {opened.name!r} in this index; pass embed_model= to create it")
        except BaseException:
            if store is None:
                opened.close()  # release the embedded folder's lock
            raise

    @classmethod
    def class_name(cls) -> str:
        return "VC2LVectorStore"

    @property
    def client(self) -> Store:
        """The project's store (``EdgeStore`` or ``ServerStore``)."""
        return self._store

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes with their embeddings (LlamaIndex embeds them first); returns their IDs."""
        records = []
        for node in nodes:
            if node.embedding is None:
                raise ValueError(f"node {node.node_id} has no embedding; embed nodes before adding them")
            payload = node_payload(node, self.thumbnails)  # type: ignore[arg-type]
            records.append(Record(point_key(node.node_id), payload, [float(v) for v in node.embedding]))
        self._store.upsert(records)
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the nodes of a document (``ref_doc_id``; for indexer points, the source file)."""
        self._store.delete(ref_doc_filter([ref_doc_id]))

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        """Delete nodes by ID and/or metadata filter (never everything: with neither, raise ``ValueError``)."""
        if node_ids is not None and not node_ids:
            return
        selector = self._filter(filters, node_ids)
        if selector is None:
            raise ValueError("give node_ids or filters; delete_nodes never empties the whole collection")
        self._store.delete(selector)

    def get_nodes(self, node_ids: list[str] | None = None,
                  filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Stored nodes by ID (in that order) and/or metadata filter; with neither, every node."""
        if node_ids is not None and not node_ids:
            return []
        records = {r.id: r for r in self._store.scroll(self._filter(filters, node_ids)) if not _index.is_part(r)}
        order = [point_key(i) for i in node_ids] if node_ids else list(records)
        return [record_to_node(records[k]) for k in dict.fromkeys(order) if k in records]

    def query(self, query: VectorStoreQuery, qdrant_filters: models.Filter | None = None,
              **kwargs: Any) -> VectorStoreQueryResult:
        """Nearest nodes to ``query.query_embedding`` (a scanned page once, at its best point), with ``filters``,
        ``node_ids`` and ``doc_ids``."""
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(f"VC2LVectorStore runs dense queries only, not {query.mode.value!r}")
        if query.query_embedding is None:
            raise ValueError("VC2LVectorStore.query needs query.query_embedding")
        selector = self._filter(query.filters, query.node_ids, query.doc_ids, qdrant_filters)
        records = _index.nearest(self._store, [float(v) for v in query.query_embedding], query.similarity_top_k,
                                 filter=selector)
        nodes = [record_to_node(r) for r in records]
        return VectorStoreQueryResult(nodes=nodes, similarities=[r.score for r in records],
                                      ids=[n.node_id for n in nodes])

    @staticmethod
    def _filter(filters: MetadataFilters | None, node_ids: Sequence[str] | None = None,
                doc_ids: Sequence[str] | None = None, extra: models.Filter | None = None) -> models.Filter | None:
        must: list[Any] = [c for c in (metadata_filters_to_qdrant(filters), extra) if c is not None]
        if node_ids:
            must.append(_index.with_parts([point_key(i) for i in node_ids]))
        if doc_ids:
            must.append(ref_doc_filter(doc_ids))
        return models.Filter(must=must) if must else None

    def close(self) -> None:
        """Close the store if this object opened it (unlocks an embedded folder)."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> VC2LVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
