"""Retrieval for RAG: the best snippets of the best documents, as a cited context for a (multimodal) LLM.

    python examples/rag_retrieval.py "your question" --model PATH [--index ./vc2l_index] [--docs 3] [--per-doc 2]
        [--messages]

Hits are grouped by document (``search_groups``), so one long PDF cannot crowd out the others. The script prints
the prompt; with ``--messages`` it prints OpenAI-style chat messages instead, with each hit's stored thumbnail
attached as an image, so a vision LLM also sees the figures the text refers to. No LLM is called here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import vc2l_retriever
from vc2l_retriever.integrations.qdrant import Hit, VC2LQdrant


def cite(n: int, hit: Hit) -> str:
    """``[n] file p.N`` and the snippet's text."""
    s = hit.snippet
    where = Path(s.source or "snippet").name + (f" p.{s.page}" if s.page else "")
    text = s.text.strip() or f"(a {s.kind} snippet without text: see the attached image)"
    return f"[{n}] {where}\n{text}"


def main() -> None:
    """Retrieve, group by document and print a cited prompt (or chat messages)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--model", help="VC2L model folder or shipped name (default: the shipped default)")
    parser.add_argument("--index", default="./vc2l_index", help="embedded Qdrant folder")
    parser.add_argument("--docs", type=int, default=3, help="documents to draw from")
    parser.add_argument("--per-doc", type=int, default=2, help="snippets per document")
    parser.add_argument("--messages", action="store_true", help="print chat messages with images as JSON")
    args = parser.parse_args()

    model = vc2l_retriever.load(args.model)
    with VC2LQdrant(model, path=args.index, create=False) as store:
        groups = store.search_groups(args.question, limit=args.docs, group_size=args.per_doc)
    hits = [hit for group in groups for hit in group.hits]
    context = "\n\n".join(cite(n, hit) for n, hit in enumerate(hits, 1))
    prompt = (f"Answer the question from the numbered sources below and cite them like [1].\n\n{context}\n\n"
              f"Question: {args.question}")
    if not args.messages:
        print(prompt)
        return
    content: list[dict] = [{"type": "text", "text": prompt}]
    for hit in hits:
        if "thumbnail" in hit.payload:
            url = "data:image/png;base64," + hit.payload["thumbnail"]
            content.append({"type": "image_url", "image_url": {"url": url}})
    print(json.dumps([{"role": "user", "content": content}], indent=2))


if __name__ == "__main__":
    main()
