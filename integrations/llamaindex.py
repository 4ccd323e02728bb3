"""LlamaIndex adapter: VC2L as a ``MultiModalEmbedding``, a reader, and Qdrant collections readable both ways.

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
- :class:`VC2LQdrantVectorStore`: a ``QdrantVectorStore`` that also reads collections written by ``vc2l index`` /
  ``VC2LQdrant`` (LangChain-shaped payload) as ``TextNode`` / ``ImageNode`` with flat metadata. Filter those
  collections with keys such as ``metadata.source``.
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

from llama_index.core.base.embeddings.base import Embedding  # noqa: E402
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.callbacks import CBEventType, EventPayload  # noqa: E402
from llama_index.core.embeddings import MultiModalEmbedding  # noqa: E402
from llama_index.core.readers.base import BaseReader  # noqa: E402
from llama_index.core.schema import BaseNode, Document, ImageDocument, ImageNode, MetadataMode, TextNode  # noqa: E402
from llama_index.core.utils import get_tqdm_iterable  # noqa: E402
from llama_index.core.vector_stores.types import VectorStoreQueryResult  # noqa: E402
from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: E402
from PIL import Image  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

from vc2l_retriever import index as _index  # noqa: E402
from vc2l_retriever.hub import encode_lock, load_shared  # noqa: E402
from vc2l_retriever.ingest import IngestError, IngestOptions, ingest_snippets  # noqa: E402
from vc2l_retriever.inputs import Snippet, save_images  # noqa: E402

__all__ = ["VC2LEmbedding", "VC2LQdrantVectorStore", "VC2LReader", "llamaindex_payload_keys", "node_from_payload",
           "vector_store"]

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

    The collection is created as the project's indexer does (cosine, the model's fingerprint in the collection
    metadata); opening one made by another model raises ``IndexMismatchError`` instead of mixing vectors.
    """
    _index.ensure_collection(client, collection_name, _index.model_identity(embed_model.model), create=create)
    return VC2LQdrantVectorStore(collection_name=collection_name, client=client, **kwargs)

