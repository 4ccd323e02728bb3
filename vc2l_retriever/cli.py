"""The ``vc2l`` command. Each subcommand is a small ``_cmd_*`` function; heavy imports happen inside it.

Bad arguments exit non-zero with a one-line message (argparse's own usage errors exit with 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _cmd_convert(args: argparse.Namespace) -> int:
    from vc2l_retriever.hub import convert_checkpoint

    if not Path(args.checkpoint).is_file():
        raise CLIError(f"no such checkpoint: {args.checkpoint}")
    model = convert_checkpoint(args.checkpoint, args.out_dir, preset=args.preset, max_chars=args.max_chars)
    sys.stdout.write(f"wrote {args.out_dir} ({model.get_embedding_dimension()}-d, preset {args.preset})\n")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from vc2l_retriever.hub import available_models
    from vc2l_retriever.model import PRESETS

    sys.stdout.write(json.dumps({"shipped": available_models(), "presets": sorted(PRESETS)}, indent=2) + "\n")
    return 0


def _open_store(args: argparse.Namespace, *, create: bool) -> Any:
    """The ``VC2LQdrant`` named by --index/--url/--collection, with the model from --model."""
    import os

    from vc2l_retriever.hub import load

    if args.url is None and not create and not Path(args.index).is_dir():
        raise CLIError(f"no index at {args.index} (run `vc2l index PATH...` first, or pass --index DIR)")
    try:
        from vc2l_retriever.index import VC2LIndexError
        from vc2l_retriever.integrations.qdrant import VC2LQdrant
    except ImportError as e:
        raise CLIError(str(e)) from e
    try:
        model = load(args.model)
    except FileNotFoundError as e:
        raise CLIError(f"{e} Pass --model NAME_OR_PATH.") from e
    try:
        return VC2LQdrant(model, path=None if args.url else args.index, url=args.url,
                          api_key=args.api_key or os.environ.get("QDRANT_API_KEY"), collection_name=args.collection,
                          create=create, batch_size=getattr(args, "batch_size", 32), model_name=args.model or "")
    except (VC2LIndexError, ValueError) as e:
        raise CLIError(str(e)) from e


def _cmd_index(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise CLIError(f"no such file or directory: {missing[0]}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    with _open_store(args, create=True) as store:
        report = store.index(args.paths, prune=args.prune)
        points = store.count()
    sys.stdout.write(f"{report.summary()}\n{points} points in collection {args.collection!r}\n")
    if not report.files and not report.unchanged and not report.snippets:
        raise CLIError("nothing was indexed (no supported documents, or all were skipped)")
    return 0


def _search_query(args: argparse.Namespace) -> Any:
    from vc2l_retriever.inputs import Snippet

    if args.query is None and args.image is None:
        raise CLIError("give a query text, --image FILE, or both")
    if args.image is None:
        return args.query
    if not Path(args.image).is_file():
        raise CLIError(f"no such image file: {args.image}")
    return Path(args.image) if args.query is None else Snippet(text=args.query, images=[Path(args.image)])


def _cmd_search(args: argparse.Namespace) -> int:
    query = _search_query(args)
    if args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    with _open_store(args, create=False) as store:
        try:
            hits = store.search(query, limit=args.limit, source=args.source)
        except ValueError as e:  # e.g. an image that cannot be decoded (InputError)
            raise CLIError(str(e)) from e
    if args.json:
        sys.stdout.write(json.dumps([hit.to_dict() for hit in hits], indent=2, ensure_ascii=False) + "\n")
        return 0
    for rank, hit in enumerate(hits, 1):
        s = hit.snippet
        where = (f" p.{s.page}" if s.page is not None else "") + (f" #{s.order}" if s.order is not None else "")
        preview = " ".join(s.text.split())[:100]
        sys.stdout.write(f"{rank:2d}. {hit.score:.4f}  {s.source}{where}  [{s.kind}]  {preview}\n")
    if not hits:
        sys.stdout.write("no hits\n")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import os

    try:
        from vc2l_retriever.index import VC2LIndexError, collection_info, open_client
    except ImportError as e:
        raise CLIError(str(e)) from e
    if args.url is None and not Path(args.index).is_dir():
        raise CLIError(f"no index at {args.index}")
    try:
        client = open_client(None if args.url else args.index, url=args.url,
                             api_key=args.api_key or os.environ.get("QDRANT_API_KEY"))
    except VC2LIndexError as e:
        raise CLIError(str(e)) from e
    try:
        names = [args.collection] if args.collection else sorted(c.name for c in client.get_collections().collections)
        collections = [collection_info(client, name) for name in names]
    except VC2LIndexError as e:
        raise CLIError(str(e)) from e
    finally:
        client.close()
    where = args.url or str(Path(args.index).resolve())
    sys.stdout.write(json.dumps({"index": where, "collections": collections}, indent=2) + "\n")
    return 0


def _add_store_args(p: argparse.ArgumentParser, *, collection: str | None = "vc2l", model: bool = True) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--index", default="./vc2l_index", metavar="DIR",
                       help="embedded Qdrant folder (default ./vc2l_index)")
    where.add_argument("--url", help="Qdrant server URL, instead of --index")
    p.add_argument("--api-key", help="Qdrant API key (default: $QDRANT_API_KEY)")
    p.add_argument("--collection", default=collection, help=f"collection name (default {collection or 'all'})")
    if model:
        p.add_argument("--model", metavar="NAME_OR_PATH", help="VC2L model (default: the shipped default model)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The argument parser and the handler of each subcommand."""
    parser = argparse.ArgumentParser(prog="vc2l", description="OCR-free multimodal retrieval with VC2L.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Handler] = {}

    p = sub.add_parser("convert-checkpoint", help="convert the paper's .pt checkpoint to our format")
    p.add_argument("checkpoint", help="OpenCLIP/VC2L .pt file (read with torch.load(weights_only=True))")
    p.add_argument("out_dir", help="output folder (sentence-transformers format)")
    p.add_argument("--preset", default="B/16-448")
    p.add_argument("--max-chars", type=int, default=768, help="768 as in training, 1100 as in the paper's eval")
    handlers["convert-checkpoint"] = _cmd_convert

    p = sub.add_parser("models", help="list shipped models and architecture presets")
    handlers["models"] = _cmd_models

    p = sub.add_parser("index", help="index documents (PDF, HTML, images, text) into Qdrant")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    _add_store_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="snippets encoded and written at a time")
    p.add_argument("--prune", action="store_true",
                   help="delete points of files that no longer exist in the given folders")
    handlers["index"] = _cmd_index

    p = sub.add_parser("search", help="search an index by text, image or both")
    p.add_argument("query", nargs="?", help="query text")
    p.add_argument("--image", metavar="FILE", help="query image (with a query text: one text+image query)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--source", metavar="GLOB", help="only hits from this source (exact path or glob, * spans /)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    _add_store_args(p)
    handlers["search"] = _cmd_search

    p = sub.add_parser("info", help="collections in an index: points, vector size, model")
    _add_store_args(p, collection=None, model=False)
    handlers["info"] = _cmd_info
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vc2l`` console script."""
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return handlers[args.command](args)
    except CLIError as e:
        sys.stderr.write(f"vc2l {args.command}: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"vc2l {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
