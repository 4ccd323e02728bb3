"""Regenerate the README's "Results" section as ``benchmarks/RESULTS.md``: quality, then speed, in one process.

    .venv/bin/python benchmarks/run_all.py --quick                           # about a minute or two
    .venv/bin/python benchmarks/run_all.py                                   # the shipped default model
    .venv/bin/python benchmarks/run_all.py --model runs/default/export       # any model folder

The file records the date, the machine (``platform``, ``os.cpu_count()``), library versions and the exact command,
so a reader can tell which numbers came from where. See ``bench_quality.py`` and ``bench_speed.py`` for what is
measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import bench_quality
import bench_speed

REPO = Path(__file__).resolve().parents[1]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tesseract() -> str:
    try:
        out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError):
        return "not installed"


def command() -> str:
    """The command line that produced this run, with the interpreter relative to the repository when it can be."""
    python = Path(sys.executable)
    if python.is_relative_to(REPO):
        python = python.relative_to(REPO)
    return shlex.join([str(python), *sys.argv])


def provenance(model: str | None) -> str:
    """What the model folder says about its training (``training_provenance.json``), if anything."""
    import vc2l_retriever

    folder = Path(model) if model else Path(vc2l_retriever.__file__).parent / "models" / "vc2l-default"
    try:
        info = json.loads((folder / "training_provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in info.items()) + ")"


def header(model: str, seconds: float, origin: str) -> list[str]:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{p} {_version(p)}" for p in ("vc2l-retriever", "torch", "sentence-transformers", "bm25s",
                                                          "pytesseract"))
    return ["## Results", "",
            f"Generated {now} by `{command()}` in {seconds:.0f} s.", "",
            f"- Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs (os.cpu_count()), "
            f"Python {platform.python_version()}; no GPU used.",
            f"- Software: {versions}; {_tesseract()}.",
            f"- Model: `{model}`{origin}."]


def notes() -> list[str]:
    return ["", "How to read these numbers:", "",
            "- Every ratio compares systems measured in the same process on the same inputs. The machine is "
            "shared with other work, so absolute speeds move between runs; ratios move less.",
            "- Text systems (MiniLM, BM25) see only the text of a snippet; on `text+image` sets they ignore the "
            "image. `—` means the system cannot take that input (for example an image-only query).",
            "- AnyCIR/text pools are the targets of the sampled queries; SeqCIR's pool is the other snippets of "
            "the query's own document; CSR's pool is every page read from the sampled PDFs.",
            "- CSR pages are 'scans': VC2L gets each page as the model's ingestion renders it (the reader: the "
            "whole page 1275 px wide, about 150 dpi, read line by line as glyph cells; a ViT model: 224-px tiles "
            "of the page 672 px wide) and never reads the text layer; OCR gets the page rendered at the stated dpi."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="VC2L model name or folder (default: the shipped default model)")
    p.add_argument("--quick", action="store_true", help="small sets and short timings (about a minute or two)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"))
    p.add_argument("--json", help="also write both reports as JSON")
    args = p.parse_args()
    forwarded = (["--model", args.model] if args.model else []) + (["--quick"] if args.quick else [])
    start = time.perf_counter()
    quality: dict[str, Any] = bench_quality.run(bench_quality.resolve(bench_quality.parser().parse_args(forwarded)))
    speed = bench_speed.run(bench_speed.parser().parse_args(forwarded))
    seconds = time.perf_counter() - start
    text = "\n".join([*header(quality["model"], seconds, provenance(args.model)), "",
                      "### Retrieval quality on held-out Debian documentation", "", bench_quality.markdown(quality),
                      "", "### Speed and memory on CPU", "", bench_speed.markdown(speed), *notes()]) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"quality": quality, "speed": speed}, indent=2) + "\n",
                                   encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
