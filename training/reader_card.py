"""The model card of a reader model (``reader.py``) trained by ``dense_train.py``: architecture, stages with their
learning curves, held-out figures in and out of domain next to all-MiniLM-L6-v2 and BM25, speed, limitations.

    python -m vc2l_retriever.training.reader_card vc2l_retriever/models/vc2l-default \
        --runs runs/reader-a runs/reader-b runs/reader-c --eval runs/eval_reader.json \
        --speed runs/speed_reader.json --notes training/recipes/reader_card_notes.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vc2l_retriever.model import build_network, count_parameters
from vc2l_retriever.st_module import VC2LModule
from vc2l_retriever.training.dense_train import curve

SOURCES = ("python3.11-doc, python-scipy-doc, python-skimage-doc, sphinx-doc, postgresql-doc-15, kicad-doc-en, "
           "texlive-latex-extra-doc (Debian documentation packages) and WordNet 3.0 (wordnet-base)")
PAGE_STEM = """- Page stem: a second glyph stem of the same shape for pages, scans and screenshots, which are cut into
  their text lines as glyph cells (`vc2l_retriever/strips.py`, no OCR); typed text never passes through it. It is the
  last run below, taught by the Unifont reader itself (the runs' own evals read typed documents with the stem they
  were training, so they understate the shipped model: its page figures are under Limitations).
"""
OOD_SOURCES = "octave-doc, git-doc and debian-reference-en (`out-of-domain`), gnucash-docs (`ood-gnucash`)"


def run_summary(run_dir: Path) -> tuple[int, float, dict[str, Any]]:
    """Samples trained, wall-clock hours of training records (gaps over 10 minutes left out), and the recipe."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    times = [r["time"] for r in records if "time" in r]
    hours = sum(b - a for a, b in zip(times, times[1:], strict=False) if b - a < 600) / 3600
    samples = max((r["samples"] for r in records), default=0)
    config = json.loads((run_dir / "recipe.json").read_text(encoding="utf-8")) if (run_dir / "recipe.json").is_file() \
        else {}
    return samples, hours, config


def results_table(results: dict[str, Any]) -> str:
    """Rows per (set, task): VC2L, MiniLM, BM25 Recall@1 / MRR@10 and the VC2L / MiniLM Recall@1 ratio."""
    lines = ["| set | task | n | this model | all-MiniLM-L6-v2 | BM25 | ratio to MiniLM (R@1) |",
             "|---|---|---:|---|---|---|---:|"]

    def cell(figures: dict[str, Any] | None) -> str:
        return f"{figures['recall@1']:.3f} / {figures['mrr@10']:.3f}" if figures else "n/a"

    for label, systems in results.items():
        for task, ours in systems["vc2l"].items():
            minilm = systems.get("all-MiniLM-L6-v2", {}).get(task)
            read = systems.get("ocr+all-MiniLM-L6-v2", {}).get(task) if minilm is None else None
            minilm = minilm or read
            bm25 = systems.get("bm25", {}).get(task)
            ratio = f"{ours['recall@1'] / minilm['recall@1']:.2f}x" if minilm and minilm["recall@1"] else "n/a"
            shown = f"{cell(minilm)} (OCR)" if read else cell(minilm)
            lines.append(f"| {label} | {task} | {ours['n']} | {cell(ours)} | {shown} | {cell(bm25)} | "
                         f"{ratio} |")
    return "\n".join(lines)


def write_card(model_dir: Path, runs: Sequence[Path], results: dict[str, Any], speed: dict[str, Any] | None,
               notes: str) -> str:
    """Compose the card and write ``model_dir/README.md``; returns the text."""
    module = VC2LModule.load(str(model_dir))
    c = module.config
    params = count_parameters(build_network(c))
    stages = []
    total_hours = 0.0
    page_stem = PAGE_STEM if c.page_stem else ""
    if c.page_stem_pixels:
        page_stem += (f"  Beside its linear map, the page stem has a pixel branch: two 3x3 convolutions "
                      f"({c.page_stem_pixels} channels) pooled to each cell.\n")
    for run in runs:
        samples, hours, _ = run_summary(run)
        total_hours += hours
        stages.append(f"### `{run.name}`: {samples:,} texts, {hours:.2f} h\n\n{curve(run)}")
    speed_line = "not measured"
    if speed:
        speed_line = (f"{speed['vc2l_passages_per_s']} passages/s vs all-MiniLM-L6-v2 "
                      f"{speed['minilm_passages_per_s']} ({speed['ratio_vc2l_over_minilm']}x), "
                      f"{speed['chars']}-character passages, batch {speed['batch_size']}, {speed['threads']} CPU "
                      "threads, one process")
    text = f"""# vc2l-default (the reader)

An OCR-free VC2L encoder (arXiv 2510.18703): every input (text, image, text+image snippet) is rendered to pixels
and embedded by one network; no tokenizer and no OCR at inference. Its transformer body starts from
all-MiniLM-L6-v2's and it was distilled from that model densely (every character, every layer), so read the
out-of-domain rows below before choosing it.

```python
import vc2l_retriever
model = vc2l_retriever.load()          # this folder, offline
emb = model.encode(["a query", "a passage"])  # L2-normalised float32, {c.embed_dim}-d
```

## Architecture ({params / 1e6:.2f}M parameters, float16 weights)

- Canvas: the `grid` layout: lower-cased text, whitespace runs collapsed, one GNU Unifont glyph per 8x16 cell,
  {c.render.columns} cells a line, at most {c.render.max_chars} characters, {c.render.max_rows} lines and
  {c.render.max_images} 224x224 image tile(s) above the text.
- Glyph stem: a linear map of each cell's pixels to {c.stem_width} channels, {c.stem_layers} residual 1-D
  convolutions (kernel {c.stem_kernel}) along the reading order, a linear map to {c.width}.
{page_stem}- Tokens: {c.patch_w // 8} cells (a {c.patch_size}x{c.patch_w} patch) averaged into one.
- Body: {c.layers} BERT layers of width {c.width} ({c.heads} heads), initialised from all-MiniLM-L6-v2, with
  its positions and its [CLS]/[SEP] vectors; mean pooling; L2 normalisation.

## Training ({total_hours:.2f} hours on a 2-core CPU)

Sources: {SOURCES}. Recipe: `training/recipes/reader.sh`. Held out: 6% of the training manuals' files
(`in-domain`), and whole sources never trained or tuned on, chosen before training: {OOD_SOURCES}.

{(chr(10) * 2).join(stages)}

## Held-out retrieval (Recall@1 / MRR@10; corpus = all documents of the task; 500 queries a task)

{results_table(results)}

title->section: query = a section heading, document = the section's first snippet. next-snippet: query = a
snippet, document = the one after it. image->caption: query = an image, document = the text of its snippet;
MiniLM and BM25 cannot read images, so the MiniLM column there is Tesseract OCR of the image + MiniLM, marked
(OCR). A random ranking scores Recall@1 = 1/n. Command:
`python -m vc2l_retriever.training.evaluate --heldout in-domain=data/docs/heldout.jsonl --heldout
out-of-domain=data/ood/heldout.jsonl --heldout ood-gnucash=data/ood_gnucash/heldout.jsonl`.

## Speed

{speed_line}. Command: `python -m vc2l_retriever.training.bench_speed --model vc2l_retriever/models/vc2l-default`.

## Limitations

{notes.strip()}
"""
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Write the model card of a reader model.")
    parser.add_argument("model_dir")
    parser.add_argument("--runs", nargs="+", required=True, help="the stages' run folders, in order")
    parser.add_argument("--eval", required=True, help="JSON written by `evaluate --json`")
    parser.add_argument("--speed", help="JSON line written by bench_speed")
    parser.add_argument("--notes", help="markdown file with the limitations section")
    args = parser.parse_args(argv)
    speed = json.loads(Path(args.speed).read_text(encoding="utf-8").strip().splitlines()[-1]) if args.speed else None
    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else "See the figures above."
    results = json.loads(Path(args.eval).read_text(encoding="utf-8"))
    write_card(Path(args.model_dir), [Path(r) for r in args.runs], results, speed, notes)
    sys.stdout.write(f"wrote {Path(args.model_dir) / 'README.md'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
