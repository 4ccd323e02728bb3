"""Search an index with a picture: find the pages, figures and web snippets that look like it.

    python examples/search_by_image.py IMAGE --model PATH [--index ./vc2l_index] [--limit 5] [--text "caption"]
        [--thumbnails OUT_DIR]

With ``--text`` the image and the text form one interleaved query (rendered onto one canvas, as in the paper).
``--thumbnails`` writes each hit's stored preview (a PNG of at most 128 px) to OUT_DIR.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import vc2l_retriever
from vc2l_retriever import Snippet
from vc2l_retriever.integrations.qdrant import VC2LQdrant


def main() -> None:
    """Run one image (or image+text) query and print the hits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--model", help="VC2L model folder or shipped name (default: the shipped default)")
    parser.add_argument("--index", default="./vc2l_index", help="embedded Qdrant folder")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--text", help="text to combine with the image in one query")
    parser.add_argument("--thumbnails", type=Path, help="write the hits' stored thumbnails here")
    args = parser.parse_args()
    if not args.image.is_file():
        parser.error(f"no such image file: {args.image}")

    # A pathlib.Path is an image file; a plain str would be searched as text.
    query = Snippet(text=args.text, images=[args.image]) if args.text else args.image
    model = vc2l_retriever.load(args.model)
    with VC2LQdrant(model, path=args.index, create=False) as store:
        hits = store.search(query, limit=args.limit)
    for rank, hit in enumerate(hits, 1):
        s = hit.snippet
        print(f"{rank}. {hit.score:.3f}  {s.source}" + (f" p.{s.page}" if s.page else "") + f"  [{s.kind}]")
        if args.thumbnails and "thumbnail" in hit.payload:
            args.thumbnails.mkdir(parents=True, exist_ok=True)
            (args.thumbnails / f"{rank:02d}.png").write_bytes(base64.b64decode(hit.payload["thumbnail"]))


if __name__ == "__main__":
    main()
