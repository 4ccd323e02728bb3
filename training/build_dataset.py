"""Folders of HTML pages and PDFs -> the paper's interleaved-document JSONL (one document per line).

Each file becomes one document, its snippets (from :func:`vc2l_retriever.ingest.ingest_file`) its segments in
reading order. Images are written once into ``OUT/images/`` under a content hash (hard-linked when the source
is a file on the same disk, else copied; in-memory images from PDFs are saved as PNG), and referenced as
``{"image_name": ..., "matched_text_index": i}`` in ``img[i]``. Besides the paper's ``text``/``img`` keys each line
carries ``meta`` (source path and each segment's heading), which readers that only know the paper's format
ignore.

Documents are split into ``train.jsonl`` and ``heldout.jsonl`` by file (a hash of the path), so no page
contributes to both. Files that fail to ingest are logged, counted in ``manifest.json`` and skipped.

    python -m vc2l_retriever.training.build_dataset /usr/share/doc/python3.11/html --out data/docs
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vc2l_retriever.ingest import HTML_SUFFIXES, PDF_SUFFIXES, IngestError, IngestOptions, discover, ingest_file
from vc2l_retriever.inputs import ImageLike, Snippet

logger = logging.getLogger(__name__)

# Generated index pages are lists of links: they add no prose and would flood the data with near-duplicates.
SKIP_NAMES = frozenset({"genindex.html", "search.html", "py-modindex.html", "np-modindex.html", "bookindex.html"})


@dataclass
class BuildStats:
    """What the builder did, written to ``manifest.json``."""

    files: int = 0
    documents: dict[str, int] = field(default_factory=lambda: {"train": 0, "heldout": 0})
    segments: int = 0
    images: int = 0
    failed_files: list[str] = field(default_factory=list)
    failed_images: int = 0


def is_heldout(source: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic split by file: the same path always lands on the same side."""
    digest = hashlib.sha1(f"{seed}:{source}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _store_image(image: ImageLike, image_root: Path) -> str:
    """Write ``image`` under its content hash and return the file name (idempotent)."""
    if isinstance(image, Path):
        data = image.read_bytes()
        name = hashlib.sha1(data).hexdigest()[:20] + image.suffix.lower()
        target = image_root / name
        if not target.exists():
            try:
                os.link(image, target)
            except OSError:  # another file system, or links not allowed: copy instead
                shutil.copyfile(image, target)
        return name
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    name = hashlib.sha1(data).hexdigest()[:20] + ".png"
    target = image_root / name
    if not target.exists():
        target.write_bytes(data)
    return name


def snippets_to_document(snippets: Sequence[Snippet], image_root: Path, stats: BuildStats) -> dict[str, Any]:
    """One file's snippets -> one JSONL record ``{"text", "img", "meta"}``."""
    texts: list[str] = []
    images: list[list[dict[str, Any]]] = []
    headings: list[str] = []
    for i, snippet in enumerate(snippets):
        entries = []
        for image in snippet.images:
            try:
                entries.append({"image_name": _store_image(image, image_root), "matched_text_index": i})
            except (OSError, ValueError) as e:
                stats.failed_images += 1
                logger.warning("%s: image %s skipped (%s)", snippet.source, image, e)
        texts.append(snippet.text)
        images.append(entries)
        headings.append(str(snippet.metadata.get("heading", "")).rstrip("¶").strip())
    meta = {"source": snippets[0].source if snippets else "", "headings": headings,
            "title": str(snippets[0].metadata.get("title", "")) if snippets else ""}
    return {"text": texts, "img": images, "meta": meta}


def iter_files(roots: Iterable[str | Path], max_files: int | None = None) -> list[Path]:
    """HTML and PDF files under each root (in :func:`discover` order), at most ``max_files`` per root."""
    files: list[Path] = []
    for root in roots:
        # System documentation is trusted: follow its symlinks (Debian links shared files between packages).
        found = [p for p in discover([root], follow_symlinks=True) if p.suffix.lower() in HTML_SUFFIXES | PDF_SUFFIXES
                 and p.name not in SKIP_NAMES]
        if max_files is not None and len(found) > max_files:
            # An even spread over the sorted list keeps every part of a manual represented.
            step = len(found) / max_files
            found = [found[int(k * step)] for k in range(max_files)]
        files.extend(found)
    return files


def build(roots: Sequence[str | Path], out: str | Path, *, max_chars: int = 480, heldout_fraction: float = 0.05,
          max_files_per_root: int | None = None, max_pages: int | None = None, seed: int = 0) -> BuildStats:
    """Ingest every HTML/PDF file under ``roots`` into ``out/{train,heldout}.jsonl`` and ``out/images``."""
    out = Path(out)
    image_root = out / "images"
    image_root.mkdir(parents=True, exist_ok=True)
    stats = BuildStats()
    sinks = {split: open(out / f"{split}.jsonl", "w", encoding="utf-8") for split in ("train", "heldout")}
    try:
        for root in roots:
            options = IngestOptions(max_chars=max_chars, image_root=Path(root), max_pages=max_pages,
                                    follow_symlinks=True)
            for path in iter_files([root], max_files_per_root):
                stats.files += 1
                try:
                    snippets = [s for s in ingest_file(path, options) if s.text.strip() or s.images]
                except IngestError as e:
                    stats.failed_files.append(str(e))
                    logger.warning("%s", e)
                    continue
                if not snippets:
                    continue
                record = snippets_to_document(snippets, image_root, stats)
                split = "heldout" if is_heldout(str(path), heldout_fraction, seed) else "train"
                sinks[split].write(json.dumps(record, ensure_ascii=False) + "\n")
                stats.documents[split] += 1
                stats.segments += len(snippets)
                stats.images += sum(len(entries) for entries in record["img"])
    finally:
        for sink in sinks.values():
            sink.close()
    manifest = {"roots": [str(r) for r in roots], "max_chars": max_chars, "heldout_fraction": heldout_fraction,
                "max_files_per_root": max_files_per_root, "max_pages": max_pages, "seed": seed, **stats.__dict__}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``build_dataset ROOT... --out DIR``."""
    parser = argparse.ArgumentParser(description="Build the interleaved-document JSONL from HTML/PDF folders.")
    parser.add_argument("roots", nargs="+", help="folders (or files) of HTML pages and PDFs")
    parser.add_argument("--out", required=True, help="output folder (train.jsonl, heldout.jsonl, images/)")
    parser.add_argument("--max-chars", type=int, default=480, help="text budget per snippet (segment)")
    parser.add_argument("--heldout-fraction", type=float, default=0.05)
    parser.add_argument("--max-files-per-root", type=int, default=None)
    parser.add_argument("--max-pages", type=int, default=None, help="read at most this many pages of a PDF")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("vc2l_retriever.ingest").setLevel(logging.ERROR)  # per-image refusals are expected noise
    stats = build(args.roots, args.out, max_chars=args.max_chars, heldout_fraction=args.heldout_fraction,
                  max_files_per_root=args.max_files_per_root, max_pages=args.max_pages, seed=args.seed)
    sys.stdout.write(json.dumps({k: v for k, v in stats.__dict__.items() if k != "failed_files"}
                                | {"failed_files": len(stats.failed_files)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
