"""The ``vc2l`` command. Each subcommand is a small ``_cmd_*`` function; heavy imports happen inside it.

Bad arguments exit non-zero with a one-line message (argparse's own usage errors exit with 2).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
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


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a request to stop after the batch in progress; a second one stops at once."""
    requested = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr.write("\nstopping after the batch in progress (Ctrl-C again to stop now)\n")

    if threading.current_thread() is not threading.main_thread():  # signals can only be handled there
        yield requested.is_set
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _cmd_index(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise CLIError(f"no such file or directory: {missing[0]}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    with _open_store(args, create=True) as store, _deferred_sigint() as stop:
        options = None  # the model's defaults
        if args.follow_symlinks:
            from dataclasses import replace

            from vc2l_retriever.index import default_ingest_options

            options = replace(default_ingest_options(store.model), follow_symlinks=True)
        report = store.index(args.paths, prune=args.prune, stop=stop, options=options)
        points = store.count()
    sys.stdout.write(f"{report.summary()}\n{points} points in collection {args.collection!r}\n")
    if report.interrupted:
        sys.stderr.write("vc2l index: interrupted; the points written so far are kept, run it again to finish\n")
        return 130
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
        from vc2l_retriever.index import VC2LIndexError, collection_info, open_index
        from vc2l_retriever.store import list_collections
    except ImportError as e:
        raise CLIError(str(e)) from e
    if args.url is None and not Path(args.index).is_dir():
        raise CLIError(f"no index at {args.index}")
    where = {"path": None if args.url else args.index, "url": args.url,
             "api_key": args.api_key or os.environ.get("QDRANT_API_KEY")}
    try:
        names = [args.collection] if args.collection else list_collections(**where)
        collections = []
        for name in names:
            with open_index(where["path"], url=args.url, api_key=where["api_key"], collection=name) as store:
                collections.append(collection_info(store))
    except VC2LIndexError as e:
        raise CLIError(str(e)) from e
    shown = args.url or str(Path(args.index).resolve())
    sys.stdout.write(json.dumps({"index": shown, "collections": collections}, indent=2) + "\n")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from vc2l_retriever.store import VC2LIndexError, is_legacy_index, migrate_legacy

    if not is_legacy_index(args.index):
        raise CLIError(f"{args.index} is not an index written by qdrant-client's local mode; nothing to migrate")
    try:
        counts = migrate_legacy(args.index)
    except VC2LIndexError as e:
        raise CLIError(str(e)) from e
    for name, n in counts.items():
        sys.stdout.write(f"migrated collection {name!r}: {n} points\n")
    backup = Path(args.index).absolute().with_name(Path(args.index).absolute().name + ".local-mode-backup")
    sys.stdout.write(f"the old folder is kept at {backup}; delete it once you are satisfied\n")
    return 0


def _cmd_export_index(args: argparse.Namespace) -> int:
    import os

    from vc2l_retriever.store import VC2LIndexError, copy_collection, open_store

    if not Path(args.index).is_dir():
        raise CLIError(f"no index at {args.index}")
    try:
        with open_store(args.index, name=args.collection) as source, \
                open_store(name=args.to_collection or args.collection, url=args.url,
                           api_key=args.api_key or os.environ.get("QDRANT_API_KEY")) as target:
            if not source.exists():
                raise CLIError(f"no collection {args.collection!r} in {args.index}")
            n = copy_collection(source, target)
    except VC2LIndexError as e:
        raise CLIError(str(e)) from e
    sys.stdout.write(f"copied {n} points to {args.url} collection {args.to_collection or args.collection!r}\n")
    return 0


def _baselines(args: argparse.Namespace) -> Any:
    """``--baselines``: MiniLM, BM25 and Tesseract on the same sets (``vc2l_retriever.baselines``), or None."""
    if not args.baselines:
        return None
    from vc2l_retriever import baselines as bl

    try:
        minilm = bl.load_minilm()
        import bm25s  # noqa: F401  (checked now, not after the model has run for minutes)

        if not args.no_ocr:
            import pytesseract

            pytesseract.get_tesseract_version()
    except Exception as e:  # ImportError, or pytesseract's TesseractNotFoundError
        raise CLIError(f"--baselines needs the bench extra and Debian's tesseract-ocr ({e}); "
                       "pip install 'vc2l-retriever[bench]', or add --no-ocr") from e
    return lambda sets: bl.run_baselines(sets, minilm, ocr=not args.no_ocr)


def _cmd_eval(args: argparse.Namespace) -> int:
    import tempfile

    from vc2l_retriever import evaluation as ev
    from vc2l_retriever.hub import load
    from vc2l_retriever.ingest import discover

    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    if not protocols or set(protocols) - set(ev.PROTOCOLS):
        raise CLIError(f"--protocol takes a comma-separated subset of {','.join(ev.PROTOCOLS)}, got {args.protocol!r}")
    if not Path(args.data).is_file():
        raise CLIError(f"no such file: {args.data}")
    if args.images is not None and not Path(args.images).is_dir():
        raise CLIError(f"no such image folder: {args.images}")
    if min(args.max_queries, args.batch_size, args.max_pages) < 1:
        raise CLIError("--max-queries, --max-pages and --batch-size must be at least 1")
    missing = [p for p in args.pdfs or [] if not Path(p).exists()]
    if missing:
        raise CLIError(f"no such file or directory: {missing[0]}")
    pdfs = None if args.pdfs is None else [str(p) for p in discover(args.pdfs) if p.suffix.lower() == ".pdf"]
    try:
        model = load(args.model, device=args.device)
    except FileNotFoundError as e:
        raise CLIError(f"{e} Pass --model NAME_OR_PATH.") from e
    documents = ev.open_documents(args.data, args.images)
    with tempfile.TemporaryDirectory(prefix="vc2l-eval-") as tiles:
        report = ev.run_eval(documents, ev.model_encoder(model, args.batch_size), protocols,
                             max_queries=args.max_queries, seed=args.seed, pdfs=pdfs, max_pages=args.max_pages,
                             tile_dir=tiles, page_options=ev.page_options(model), baselines=_baselines(args),
                             points=ev.model_points(model, args.batch_size))
    report = {"model": args.model or "vc2l-default", "data": str(args.data), "protocols": protocols, **report}
    sys.stdout.write(ev.format_table(report["results"]) + "\n" + ev.format_gap(report["modality_gap"]) + "\n")
    for system, results in report.get("baselines", {}).items():
        sys.stdout.write(f"\n{system}\n{ev.format_table(results)}\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
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


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        from vc2l_retriever.training.config import TrainConfig
        from vc2l_retriever.training.trainer import Trainer, TrainingError
    except ImportError as e:
        raise CLIError(f"{e} (pip install 'vc2l-retriever[train]')") from e
    if not Path(args.config).is_file():
        raise CLIError(f"no such config: {args.config}")
    if _is_dense_recipe(args.config):  # the reader's dense distillation (training/dense_train.py)
        from vc2l_retriever.training.dense_train import DenseRecipe, DenseTrainer

        try:
            recipe = DenseRecipe.from_yaml(args.config, args.set)
            DenseTrainer(recipe).train()
        except (ValueError, FileNotFoundError) as e:
            raise CLIError(str(e)) from e
        sys.stdout.write(json.dumps({"run_dir": recipe.run_dir}) + "\n")
        return 0
    try:
        config = TrainConfig.from_yaml(args.config).with_overrides(args.set)
        last = Trainer(config).train()
    except (ValueError, FileNotFoundError, TrainingError) as e:
        raise CLIError(str(e)) from e
    sys.stdout.write(json.dumps({"run_dir": config.run_dir, **last}) + "\n")
    return 0


def _is_dense_recipe(path: str) -> bool:
    """A dense-distillation recipe names its ``stage`` at the top level; the ViT trainer's has sections."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return isinstance(data, dict) and "stage" in data


def _cmd_export(args: argparse.Namespace) -> int:
    from vc2l_retriever.training.export import export_run

    if Path(args.run_dir, "recipe.json").is_file():  # a dense-distillation run: its latest checkpoint
        from vc2l_retriever.training.dense_train import export

        export(args.run_dir, args.out_dir, fp16=args.fp16)
        sys.stdout.write(f"wrote {args.out_dir} (reader, latest checkpoint)\n")
        return 0
    if not Path(args.run_dir, "config.yaml").is_file():
        raise CLIError(f"{args.run_dir} is not a training run folder (no config.yaml)")
    try:
        model = export_run(args.run_dir, args.out_dir, which=args.which, fp16=args.fp16)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from e
    sys.stdout.write(f"wrote {args.out_dir} ({model.get_embedding_dimension()}-d, {args.which} checkpoint)\n")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    try:
        from vc2l_retriever.serve import is_loopback, run
    except ImportError as e:
        raise CLIError(str(e)) from e
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be between 1 and 65535, got {args.port}")
    key = args.api_key or os.environ.get("VC2L_API_KEY") or None
    if key is None and not is_loopback(args.host):
        sys.stderr.write(f"vc2l serve: warning: listening on {args.host} without an API key; anyone who reaches it "
                         "can search the index and read its files (set --api-key or $VC2L_API_KEY)\n")
    # The store options' --api-key is the Qdrant server's key; here --api-key protects this server.
    store_args = argparse.Namespace(**{**vars(args), "api_key": args.qdrant_api_key})
    with _open_store(store_args, create=False) as store:
        sys.stderr.write(f"vc2l serve: {store.count()} points in collection {args.collection!r}; open "
                         f"http://{args.host}:{args.port}/ (API key {'required' if key else 'off'})\n")
        run(store, host=args.host, port=args.port, api_key=key, batching=not args.no_batching,
            model_name=args.model or "vc2l-default")
    return 0


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

    p = sub.add_parser("train", help="train a VC2L encoder from a YAML recipe (resumes a run folder)")
    p.add_argument("config", help="recipe YAML (see vc2l_retriever/training/recipes/default.yaml)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override recipe values, e.g. --set optim.total_samples=3000000 data.num_workers=8")
    handlers["train"] = _cmd_train

    p = sub.add_parser("export", help="export a training run's checkpoint as a model folder")
    p.add_argument("run_dir", help="training run folder")
    p.add_argument("out_dir", help="output folder (sentence-transformers format, loads with vc2l_retriever.load)")
    p.add_argument("--which", choices=["best", "latest"], default="best")
    p.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    handlers["export"] = _cmd_export

    p = sub.add_parser("index", help="index documents (PDF, HTML, images, text) into Qdrant")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    _add_store_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="snippets encoded and written at a time")
    p.add_argument("--prune", action="store_true",
                   help="delete points of files that no longer exist in the given folders")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="also read files, folders and images that symlinks inside the given folders point to "
                        "outside them (refused by default)")
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

    p = sub.add_parser("migrate-index", help="convert an index written before Qdrant Edge (qdrant-client local mode)")
    p.add_argument("index", nargs="?", default="./vc2l_index", help="the index folder (default ./vc2l_index)")
    handlers["migrate-index"] = _cmd_migrate

    p = sub.add_parser("export-index", help="copy an embedded index's collection to a Qdrant server or cluster")
    p.add_argument("--index", default="./vc2l_index", help="embedded index folder (default ./vc2l_index)")
    p.add_argument("--collection", default="vc2l", help="collection to copy (default vc2l)")
    p.add_argument("--url", required=True, help="the Qdrant server, e.g. http://127.0.0.1:6333")
    p.add_argument("--api-key", help="server API key (default: $QDRANT_API_KEY)")
    p.add_argument("--to-collection", help="name on the server (default: the same)")
    handlers["export-index"] = _cmd_export_index

    p = sub.add_parser("eval", help="retrieval quality on an interleaved JSONL (AnyCIR, SeqCIR, CSR, text)")
    p.add_argument("data", metavar="DATA.jsonl", help="documents in the training format, one a line")
    p.add_argument("--images", metavar="ROOT", help="folder of the image files (default: images/ beside DATA)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="VC2L model (default: the shipped default model)")
    p.add_argument("--protocol", default="anycir,seqcir,csr,text", help="comma-separated (default: all four)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--pdfs", nargs="+", metavar="PATH",
                   help="PDFs or folders for CSR (default: the PDFs named in the documents' meta.source)")
    p.add_argument("--max-queries", type=int, default=500, help="queries sampled per set (default 500)")
    p.add_argument("--max-pages", type=int, default=12, help="pages read per PDF for CSR (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="torch device (default: sentence-transformers' choice)")
    p.add_argument("--baselines", action="store_true",
                   help="also score all-MiniLM-L6-v2, BM25 and Tesseract OCR + each on the same sets (bench extra)")
    p.add_argument("--no-ocr", action="store_true", help="with --baselines: leave Tesseract out (seconds a page)")
    handlers["eval"] = _cmd_eval

    p = sub.add_parser("serve", help="a search page and an HTTP API (embeddings, search) over an index")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--index", default="./vc2l_index", metavar="DIR",
                       help="embedded Qdrant folder (default ./vc2l_index)")
    where.add_argument("--url", help="Qdrant server URL, instead of --index")
    p.add_argument("--qdrant-api-key", help="Qdrant server API key (default: $QDRANT_API_KEY)")
    p.add_argument("--collection", default="vc2l", help="collection name (default vc2l)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="VC2L model (default: the shipped default model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every request (default: $VC2L_API_KEY)")
    p.add_argument("--no-batching", action="store_true",
                   help="encode each request on its own instead of sharing passes between concurrent requests")
    handlers["serve"] = _cmd_serve
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vc2l`` console script."""
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # file names that are not valid UTF-8 print as their own bytes
        sys.stdout.reconfigure(errors="surrogateescape")
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
