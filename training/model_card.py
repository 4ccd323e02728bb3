"""Write a model folder's ``README.md`` from its training run: held-out figures next to the teacher, the
learning curve, speed and hours. Numbers come only from the run's files (and an optional speed JSON written by
``bench_speed``), so the card cannot drift from what was measured.

    python -m vc2l_retriever.training.model_card runs/default vc2l_retriever/models/vc2l-default \
        --speed runs/speed.json --notes training/recipes/notes.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vc2l_retriever.model import VisionTransformer, count_parameters
from vc2l_retriever.training.config import TrainConfig

CPU_HARDWARE = "one CPU thread of a shared 2-core machine (niced)"  # the first recipe's machine
CPU_RECIPE = "training/recipes/default.sh and default.yaml"

TASKS = ("title->section", "next-snippet", "image->caption", "word->definition")


def read_metrics(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(training records, eval records, start records)`` of ``metrics.jsonl``.

    Start records say what each (re)start of the run ran on; they are not training steps.
    """
    train, evals, starts = [], [], []
    path = run_dir / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        record = json.loads(line)
        if "start" in record:
            starts.append(record["start"])
        else:
            (evals if "eval" in record else train).append(record)
    return train, evals, starts


def exported_eval(evals: list[dict[str, Any]], best: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """Held-out results of the checkpoint the folder holds: ``best.json``'s unless a later one was exported."""
    if provenance.get("checkpoint") == "best" or "samples" not in provenance:
        return best["eval"]
    for record in reversed(evals):
        if record["samples"] == provenance["samples"]:
            return record["eval"]
    raise ValueError(f"no held-out eval at {provenance['samples']} pairs in metrics.jsonl: export a checkpoint "
                     "that was scored, or --which best")


def training_hours(train: list[dict[str, Any]], max_gap_s: float = 600.0) -> float:
    """Wall-clock hours spent training: gaps between log records, ignoring pauses longer than ``max_gap_s``."""
    times = sorted(r["time"] for r in train if "time" in r)
    return sum(b - a for a, b in zip(times, times[1:]) if b - a < max_gap_s) / 3600  # noqa: B905


def _cell(result: dict[str, Any] | None) -> str:
    if not result:
        return "n/a"
    return f"{result['recall@1']:.3f} / {result['mrr@10']:.3f}"


def results_table(best: dict[str, Any], baseline: dict[str, Any]) -> str:
    """Markdown table: each task's Recall@1 / MRR@10 for the model and the teacher."""
    rows = ["| held-out task | n | vc2l-default R@1 / MRR@10 | all-MiniLM-L6-v2 R@1 / MRR@10 |",
            "|---|---|---|---|"]
    for task in TASKS:
        ours = best.get(task)
        if ours is None:
            continue
        theirs = baseline.get(task)
        rows.append(f"| {task} | {ours['n']} | {_cell(ours)} | {_cell(theirs) if theirs else 'n/a (text only)'} |")
    return "\n".join(rows)


def curve_table(evals: list[dict[str, Any]]) -> str:
    """Markdown table of Recall@1 per task against samples seen."""
    tasks = [t for t in TASKS if any(t in e["eval"] for e in evals)]
    rows = ["| samples (pairs) | " + " | ".join(f"{t} R@1" for t in tasks) + " |",
            "|---|" + "---|" * len(tasks)]
    for e in evals:
        cells = [f"{e['eval'][t]['recall@1']:.3f}" if t in e["eval"] else "" for t in tasks]
        rows.append(f"| {e['samples']:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _run_device(starts: list[dict[str, Any]]) -> str:
    """What a run's ``start`` records say it ran on ("" for runs older than those records)."""
    # A resumed run may have moved machines: each kind once, in order.
    kinds = dict.fromkeys(f"{s['device']} x{s['world']}" if s["device"] != "cpu"
                          else f"CPU ({s['threads']} thread{'s' * (s['threads'] != 1)})" for s in starts)
    return ", then ".join(kinds)


def _lineage(provenance: dict[str, Any]) -> str:
    """One sentence on the starting weights of a fine-tune (empty for a run trained from scratch)."""
    init = provenance.get("init_from")
    if not init:
        return ""
    where = f"run `{init['run_dir']}`, {init['samples']:,} pairs" if "samples" in init else "a saved model"
    return (f"\n- Fine-tuned from `{init.get('model')}` as it was before this run ({where}); the learning curve's "
            "first row (0 pairs) is that starting model, scored on the same queries.")


def _losses_line(config: TrainConfig) -> str:
    loss, pairs = config.loss, config.pairs
    line = (f"distillation (cosine + in-batch contrastive, weight {loss.distill}) to all-MiniLM-L6-v2's embedding "
            f"of the same text, and the paper's snippet InfoNCE on neighbouring segments (weight {loss.infonce})")
    if pairs.heading_pairs:
        line += (f"; with probability {pairs.heading_pairs:g} a pair is (section heading, that section's text) "
                 "instead of neighbours, where the drawn document has headings")
    if pairs.curriculum:
        line += (f". Curriculum on text length, as [until sample, characters]: {pairs.curriculum}, then "
                 f"{pairs.max_chars}")
    return line + "."


def _which_line(provenance: dict[str, Any]) -> str:
    if provenance.get("checkpoint") == "best":
        return "the best checkpoint by held-out score (mean Recall@1 of the tasks below)"
    return f"the run's {provenance.get('checkpoint')} checkpoint (the last one trained)"


def write_card(run_dir: Path, model_dir: Path, speed: dict[str, Any] | None, notes: str,
               hardware: str = CPU_HARDWARE, recipe: str = CPU_RECIPE, extra_data: str = "") -> str:
    """Compose the card and write it to ``model_dir/README.md``; returns the text."""
    config = TrainConfig.from_yaml(run_dir / "config.yaml")
    model_config = config.model.build()
    params = count_parameters(VisionTransformer(model_config))
    train, evals, starts = read_metrics(run_dir)
    best = json.loads((run_dir / "best.json").read_text(encoding="utf-8"))
    baseline = json.loads((run_dir / "baseline.json").read_text(encoding="utf-8"))["results"]
    provenance_path = model_dir / "training_provenance.json"
    provenance = json.loads(provenance_path.read_text(encoding="utf-8")) if provenance_path.is_file() else {}
    hours = training_hours(train)
    samples = train[-1]["samples"] if train else 0
    r = model_config.render
    extra = f", plus {extra_data}" if extra_data else ""
    speed_line = "not measured"
    if speed:
        speed_line = (f"{speed['vc2l_passages_per_s']} passages/s vs all-MiniLM-L6-v2 "
                      f"{speed['minilm_passages_per_s']} passages/s ({speed['ratio_vc2l_over_minilm']}x), "
                      f"{speed['chars']}-character passages, batch {speed['batch_size']}, "
                      f"{speed['threads']} CPU threads, both in one process")
    text = f"""# vc2l-default

A small VC2L encoder (arXiv 2510.18703): every input (text, image, text+image snippet) is rendered to pixels
and embedded by one vision transformer. No tokenizer, no OCR. It was trained on {hardware}, by distillation
from all-MiniLM-L6-v2 plus the paper's next-snippet contrastive loss, and it is **weaker than its teacher** on
text: read the figures below before choosing it.

```python
import vc2l_retriever
model = vc2l_retriever.load()          # this folder, offline
emb = model.encode(["a query", "a passage"])  # L2-normalised float32, {model_config.embed_dim}-d
```

## Architecture

ViT, width {model_config.width}, {model_config.layers} layers, {model_config.heads} heads, patches \
{model_config.patch_size} tall x {model_config.patch_w} wide, {model_config.pool} pooling, {model_config.embed_dim}-d \
output, {params / 1e6:.2f}M parameters (weights stored as {'float16' if provenance.get('fp16') else 'float32'}). \
Canvas: the `{r.layout}` layout, {r.tile} px wide, text lower-cased and cut at {r.max_chars} characters, at most \
{r.max_rows} text rows and {r.max_images} image tile(s).

## Training

- Data: Debian documentation packages (python3.11-doc, python-scipy-doc, python-skimage-doc, sphinx-doc,
  postgresql-doc-15, kicad-doc-en, texlive-latex-extra-doc), ingested with `vc2l_retriever.ingest` into the
  paper's interleaved JSONL{extra}; held-out documents are whole files never seen in training. Recipe:
  `{recipe}` in the repository.
- Losses: {_losses_line(config)}{_lineage(provenance)}
- This folder holds {_which_line(provenance)}: step \
{provenance.get('step')}, {provenance.get('samples')} pairs. When this card was written the run had trained on \
{samples:,} pairs in {hours:.2f} hours of wall-clock time on {_run_device(starts) or hardware}.

## Held-out retrieval (Recall@1 / MRR@10; corpus = all documents of the task)

{results_table(exported_eval(evals, best, provenance), baseline)}

title->section: query = a section heading, document = the section's first snippet. next-snippet: query = a
snippet, document = the one after it. image->caption: query = an image, document = the text of its snippet
(all-MiniLM-L6-v2 cannot read images). A random ranking scores Recall@1 = 1/n (0.002 for n = 500).

## Learning curve

{curve_table(evals)}

## Speed

{speed_line}. Command: `python -m vc2l_retriever.training.bench_speed --model vc2l_retriever/models/vc2l-default`.

## Limitations

{notes.strip()}
"""
    (model_dir / "README.md").write_text(text, encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``model_card RUN_DIR MODEL_DIR [--speed JSON] [--notes FILE]``."""
    parser = argparse.ArgumentParser(description="Write a model card from a training run.")
    parser.add_argument("run_dir")
    parser.add_argument("model_dir")
    parser.add_argument("--speed", help="JSON line written by bench_speed")
    parser.add_argument("--notes", help="markdown file with the limitations section")
    parser.add_argument("--hardware", default=CPU_HARDWARE,
                        help="what the run trained on, as a phrase")
    parser.add_argument("--recipe", default=CPU_RECIPE,
                        help="the recipe files to name")
    parser.add_argument("--extra-data", default="",
                        help="training sources beyond the Debian manuals, as a phrase")
    args = parser.parse_args(argv)
    speed = json.loads(Path(args.speed).read_text(encoding="utf-8").strip().splitlines()[-1]) if args.speed else None
    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else "See the figures above."
    write_card(Path(args.run_dir), Path(args.model_dir), speed, notes, args.hardware, args.recipe, args.extra_data)
    sys.stdout.write(f"wrote {Path(args.model_dir) / 'README.md'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
