"""Index a folder of documents (PDF, HTML, Markdown/text, images) into an embedded Qdrant index.

    python examples/index_folder.py FOLDER [FOLDER ...] --model PATH [--index ./vc2l_index] [--batch-size 32]

Run it again after editing files: unchanged files are skipped without being parsed, a changed file's old
snippets are replaced, and unreadable files are listed with the reason. Same as ``vc2l index``.
"""

from __future__ import annotations

import argparse
import json
import logging

import vc2l_retriever
from vc2l_retriever.integrations.qdrant import VC2LQdrant


def main() -> None:
    """Index the given folders and print the report and the collection's description."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--model", help="VC2L model folder or shipped name (default: the shipped default)")
    parser.add_argument("--index", default="./vc2l_index", help="embedded Qdrant folder")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    model = vc2l_retriever.load(args.model)
    with VC2LQdrant(model, path=args.index, batch_size=args.batch_size, model_name=args.model or "") as store:
        report = store.index(args.folders, progress=True)
        print(report.summary())
        print(json.dumps(store.info(), indent=2))


if __name__ == "__main__":
    main()
