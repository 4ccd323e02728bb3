"""Multimodal retrieval with LlamaIndex: one VC2L encoder for text and images, both stores in one embedded index.

    python examples/llamaindex_rag.py --model PATH [--docs examples/docs] [--index ./li_index]
        [--query "How often should the inverter be checked?"] [--image examples/docs/images/tide_chart.png] [-k 3]

``VC2LReader`` turns PDFs, web pages and pictures into ``Document`` s (text, or text with ``image_paths``) and
``ImageDocument`` s (``image_path``: paths, never base64). Two indexes are built:

1. ``MultiModalVectorStoreIndex``: text snippets in one collection, images in another (one index folder), the
   same encoder as ``embed_model`` and ``image_embed_model``. A text query returns text and images; an image query
   returns similar images (image-to-image).
2. ``VectorStoreIndex``: everything in one collection, since VC2L puts text, images and text+image snippets in one
   space; a text query may return any of them.

The collections are ``VC2LVectorStore`` s in the project's embedded index (Qdrant Edge, in this process; the
format ``vc2l index`` writes, so ``vc2l search --index ./li_index --collection all "..."`` searches it too). One
``EdgeFolder`` holds the three: an index folder is opened once. For a Qdrant server, give each store ``url=``.

The encoder also runs as a transformation, so a snippet's text and figures become ONE vector (LlamaIndex hands
embedding models strings only; indexes keep embeddings that nodes already have). No LLM is used:
``Settings.llm = None`` keeps LlamaIndex from reaching for OpenAI; plug in your own LLM for a query engine.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import ImageNode, NodeWithScore

from vc2l_retriever.integrations.llamaindex import VC2LEmbedding, VC2LReader, VC2LVectorStore
from vc2l_retriever.store import EdgeFolder

HERE = Path(__file__).resolve().parent


def show(title: str, hits: list[NodeWithScore]) -> None:
    """``[n] file p.N (kind, score)`` and the start of the text, or the image path."""
    print(title)
    for n, hit in enumerate(hits, 1):
        md = hit.node.metadata
        where = Path(md.get("source") or "?").name + (f" p.{md['page']}" if md.get("page") else "")
        print(f"[{n}] {where} ({md.get('kind')}, score {hit.score:.3f})")
        text = hit.node.get_content().strip().replace("\n", " ")[:100]
        image = hit.node.image_path if isinstance(hit.node, ImageNode) else None
        print(f"    {text or f'image: {image}'}")


def build(docs: Path, index_dir: Path, embed_model: VC2LEmbedding, vector_store: Callable[[str], VC2LVectorStore]
          ) -> tuple[MultiModalVectorStoreIndex, VectorStoreIndex]:
    """Read the files and build both indexes (collections ``text``, ``images`` and ``all``)."""
    reader = VC2LReader(image_dir=index_dir / "images")  # PDF figures and page tiles are saved here
    documents = reader.load_data([docs])
    for error in reader.errors:
        print(f"skipped {error}")
    # The splitter makes ImageNodes of ImageDocuments; stable node IDs make a second run overwrite, not duplicate.
    splitter = SentenceSplitter(id_func=lambda i, doc: str(uuid.uuid5(uuid.UUID(doc.id_), str(i))))
    transformations = [splitter, embed_model]  # VC2L embeds each node: text, image, or text+image as one vector
    storage = StorageContext.from_defaults(vector_store=vector_store("text"), image_store=vector_store("images"))
    multimodal = MultiModalVectorStoreIndex.from_documents(
        documents, storage_context=storage, embed_model=embed_model, image_embed_model=embed_model,
        transformations=transformations)
    everything = vector_store("all")
    VectorStoreIndex.from_documents(documents, storage_context=StorageContext.from_defaults(vector_store=everything),
                                    embed_model=embed_model, transformations=transformations)
    # Query through a fresh index over the store: the building index's own retriever would search only its
    # ImageNodes (LlamaIndex lists image nodes in the index struct and restricts the search to that list).
    return multimodal, VectorStoreIndex.from_vector_store(everything, embed_model=embed_model)


def main(argv: list[str] | None = None) -> None:
    """Index the files and run a text query (text + images), an image query and a plain text query."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="VC2L model folder or shipped name (default: the shipped default)")
    parser.add_argument("--docs", type=Path, default=HERE / "docs", help="files or folder to index")
    parser.add_argument("--index", type=Path, default=Path("./li_index"), help="embedded index folder (Qdrant Edge)")
    parser.add_argument("--query", default="How often should the inverter be checked?")
    parser.add_argument("--image", type=Path, default=HERE / "docs" / "images" / "tide_chart.png")
    parser.add_argument("-k", type=int, default=3, help="hits per query")
    args = parser.parse_args(argv)

    Settings.llm = None  # retrieval only: nothing reaches for OpenAI
    embed_model = VC2LEmbedding(args.model)
    Settings.embed_model = embed_model
    with ExitStack() as closing:  # stores first, then the folder (callbacks run last-in, first-out)
        folder = EdgeFolder(args.index)
        closing.callback(folder.close)

        def vector_store(name: str) -> VC2LVectorStore:
            """The collection ``name`` of the index folder, created for the encoder on first use."""
            store = folder.store(name)
            closing.callback(store.close)
            return VC2LVectorStore(store, embed_model=embed_model)

        multimodal, plain = build(args.docs, args.index, embed_model, vector_store)
        retriever = multimodal.as_retriever(similarity_top_k=args.k, image_similarity_top_k=args.k)
        hits = retriever.retrieve(args.query)  # text hits, then image hits
        show(f"Text query: {args.query}\n-- text", [h for h in hits if not isinstance(h.node, ImageNode)])
        show("-- images", [h for h in hits if isinstance(h.node, ImageNode)])
        show(f"\nImage query: {args.image}", retriever.image_to_image_retrieve(str(args.image)))
        show(f"\nOne index for everything: {args.query}", plain.as_retriever(similarity_top_k=args.k)
             .retrieve(args.query))


if __name__ == "__main__":
    main()
