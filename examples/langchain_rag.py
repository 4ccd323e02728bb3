"""Retrieval for RAG with LangChain: PDFs, web pages and pictures in an embedded index, searched by text and by image.

    python examples/langchain_rag.py --model PATH [--docs examples/docs] [--index ./lc_index]
        [--query "How often should the inverter be checked?"] [--image examples/docs/images/tide_chart.png] [-k 3]

Files are cut into snippets by the project's ingestion (``VC2LDocumentLoader``: one LangChain ``Document`` per
snippet, with ``source``/``page`` metadata and ``image_paths``), embedded by VC2L (a snippet's text and figures as
ONE vector) and written by ``VC2LVectorStore`` to the project's embedded index (Qdrant Edge, in this process), the
format ``vc2l index`` writes: ``vc2l search --index ./lc_index --collection docs "..."`` searches it too. A text
query goes through the standard retriever; an image query is an image vector (``embed_image``) searched with
``similarity_search_by_vector``, so pictures, figures and pages come back as ``Document`` s. No LLM is called
here: hand ``hits`` to your chain. For a Qdrant server, pass ``url=`` instead of ``path=``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from langchain_core.documents import Document

from vc2l_retriever.integrations.langchain import VC2LDocumentLoader, VC2LEmbeddings, VC2LVectorStore

HERE = Path(__file__).resolve().parent


def show(hits: list[Document]) -> None:
    """``[n] file p.N (kind)`` and the start of the text, or the image files."""
    for n, doc in enumerate(hits, 1):
        md = doc.metadata
        where = Path(md.get("source") or "?").name + (f" p.{md['page']}" if md.get("page") else "")
        print(f"[{n}] {where} ({md.get('kind')})")
        body = doc.page_content.strip().replace("\n", " ")[:100] or f"images: {', '.join(md.get('image_paths', []))}"
        print(f"    {body}")


def main(argv: list[str] | None = None) -> None:
    """Load, index and answer one text query and one image query."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="VC2L model folder or shipped name (default: the shipped default)")
    parser.add_argument("--docs", type=Path, default=HERE / "docs", help="files or folder to index")
    parser.add_argument("--index", type=Path, default=Path("./lc_index"), help="embedded index folder (Qdrant Edge)")
    parser.add_argument("--collection", default="docs")
    parser.add_argument("--query", default="How often should the inverter be checked?")
    parser.add_argument("--image", type=Path, default=HERE / "docs" / "images" / "tide_chart.png")
    parser.add_argument("-k", type=int, default=3, help="hits per query")
    args = parser.parse_args(argv)

    embeddings = VC2LEmbeddings(args.model)
    loader = VC2LDocumentLoader([args.docs], image_dir=args.index / "images")  # PDF figures are saved here
    documents = loader.load()
    for error in loader.errors:
        print(f"skipped {error}")

    with VC2LVectorStore(embeddings, path=args.index, collection_name=args.collection) as store:
        store.add_documents(documents)  # a snippet's text and figures (image_paths) become ONE vector
        print(f"{len(documents)} snippets in {args.index}/{args.collection}\n\nText query: {args.query}")
        retriever = store.as_retriever(search_kwargs={"k": args.k})
        show(retriever.invoke(args.query))
        print(f"\nImage query: {args.image}")
        show(store.similarity_search_by_vector(embeddings.embed_image([str(args.image)])[0], k=args.k))


if __name__ == "__main__":
    main()
