"""Dense distillation of the reader (``vc2l_retriever/reader.py``) from all-MiniLM-L6-v2: stages a and b.

    vc2l-dense training/recipes/reader_a.yaml      # or: python -m vc2l_retriever.training.dense_train RECIPE

- **Stage a** (``stage: stem``): the glyph stem alone learns to output, at every character cell, the teacher's
  word-embedding row of the wordpiece containing it. No transformer runs, so it is cheap; the body is the
  teacher's, copied (``teacher_body.copy_teacher_body``).
- **Stage b** (``stage: all``): stem and body together, with per-character, per-patch-per-layer and sentence
  losses (``dense.py``), separate learning rates for stem and body.
- **Stage c** (``stage: all`` with ``pair_weight > 0``): stage b's step plus the paper's snippet InfoNCE on
  pairs from interleaved documents with their images (:class:`SnippetPairs`), so images land in the space the
  text already has, while the dense terms keep the text where it was.

Texts come from interleaved-document JSONL files (``build_dataset.py``, ``build_lexicon.py``), mixed by weight:
a random segment cut to whole sentences at a per-batch length cap, or a section heading (the shape of a query).
Every sample is a function of ``(seed, index)``. A run folder gets ``config.yaml``, ``metrics.jsonl`` (training
records and held-out evals, in and out of domain), ``baseline.json`` (the teacher on the same queries) and
``checkpoints/``; running the same command again resumes from the latest checkpoint. ``vc2l export RUN OUT``
does not read these runs; :func:`export` here writes the model folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vc2l_retriever.inputs import Snippet
from vc2l_retriever.model import VC2LConfig
from vc2l_retriever.render import Renderer
from vc2l_retriever.st_module import VC2LModule
from vc2l_retriever.training.checkpoint import load_checkpoint, read_pointer, save_checkpoint, write_json
from vc2l_retriever.training.data import Collator, InterleavedDocuments, heading_crop, sentence_crop
from vc2l_retriever.training.dense import DenseDistillLoss, build_targets
from vc2l_retriever.training.strip_distill import StripDistill
from vc2l_retriever.training.teacher_body import TextTeacher, copy_teacher_body
from vc2l_retriever.training.trainer import lr_factor as trainer_lr_factor

logger = logging.getLogger(__name__)


@dataclass
class DenseRecipe:
    """One stage of dense distillation (YAML keys; unknown keys are an error)."""

    run_dir: str = "runs/reader"
    stage: str = "all"  # "stem" (a) or "all" (b)
    preset: str = "reader-L6"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a run folder (its latest checkpoint) or a model folder; None: fresh stem
    # Start the stem from ``init_from``'s page stem (a shipped reader's): continue the page stem, which export
    # --text-from puts back as the page stem beside that model's text stem.
    init_page_stem: bool = False
    train: dict[str, float] = field(default_factory=lambda: {"data/docs/train.jsonl": 1.0})
    heldout: dict[str, str] = field(default_factory=dict)  # label -> held-out JSONL, e.g. {"ood": ...}
    eval_queries: int = 500
    eval_every: int = 8192  # samples
    checkpoint_every: int = 2048
    log_every: int = 256  # samples between training records
    batch_size: int = 32
    total_samples: int = 32768
    warmup: int = 1024
    lr_stem: float = 5e-4
    lr_body: float = 1e-4
    weight_decay: float = 0.01
    char_weight: float = 1.0
    char_scale_weight: float = 1.0  # relative squared error next to the cosine in the per-character term
    char_choice_weight: float = 0.0  # cross-entropy: which of the batch's wordpieces covers each character
    layer_weight: float = 1.0
    sentence_weight: float = 1.0
    contrastive_weight: float = 0.5
    heading_share: float = 0.25  # share of samples that are a section heading
    pair_weight: float = 0.0  # stage c: weight of the snippet InfoNCE (0: off)
    pair_source: str = "data/docs/train.jsonl"  # interleaved documents with images
    pair_batch: int = 16
    pair_image_share: float = 0.5  # share of pairs built around a segment that has an image
    lengths: list[int] = field(default_factory=lambda: [48, 96, 192, 400])  # per-batch character caps
    strip_weight: float = 0.0  # issue 17: real-font line strips taught the initial stem's grid output (0: off)
    strip_fonts: list[str] = field(default_factory=list)  # globs of the TrueType files drawn in training
    strip_eval_fonts: list[str] = field(default_factory=list)  # held-out fonts: evals add "<label>/strips"
    anchor_weight: float = 1.0  # with strips: the stem's output on grid text held at the initial stem's
    strip_choice_weight: float = 0.0  # with strips: the wordpiece under each strip cell, as a choice (stage a's)
    strip_sentence_weight: float = 0.0  # with strips: the strip text's embedding -> the teacher's of the grid text
    strip_pdf_share: float = 0.0  # share of strip samples that are lines of the training manuals' PDF pages
    strip_pdfs: str | None = None  # a training JSONL: the PDFs named in its meta.source are drawn from
    strip_teacher: str | None = None  # run or model whose stem teaches the strips (None: the starting stem)
    seed: int = 0
    threads: int = 2

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: list[str] | None = None) -> DenseRecipe:
        """Read a recipe; ``overrides`` are ``key=value`` strings parsed as YAML."""
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for item in overrides or []:
            key, _, value = item.partition("=")
            data[key] = yaml.safe_load(value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe keys {unknown}; known: {sorted(known)}")
        return cls(**data)


class TextMix:
    """Deterministic text samples from weighted JSONL sources: segments cut to sentences, or headings."""

    def __init__(self, sources: dict[str, float], heading_share: float, seed: int) -> None:
        self.docs = [InterleavedDocuments(path) for path in sources]
        weights = np.array(list(sources.values()), dtype=np.float64)
        self.cumulative = np.cumsum(weights / weights.sum())
        self.heading_share, self.seed = heading_share, seed

    def text(self, index: int, max_chars: int) -> str:
        rng = random.Random(self.seed * 1_000_003 + index)
        docs = self.docs[int(np.searchsorted(self.cumulative, rng.random(), side="right").clip(0, len(self.docs) - 1))]
        for _ in range(8):  # a few tries past empty documents
            doc = docs[rng.randrange(len(docs))]
            if not doc.texts:
                continue
            i = rng.randrange(len(doc.texts))
            headings = doc.meta.get("headings") or []
            if rng.random() < self.heading_share and i < len(headings) and len(headings[i]) >= 3:
                return heading_crop(headings[i], max_chars)
            text = " ".join(doc.texts[i].split())
            if len(text) >= 8:
                return sentence_crop(text, max_chars, rng)
        return "empty document"


class SnippetPairs:
    """Stage c's pairs: the paper's neighbouring snippets, and pairs built around the images of the documents.

    With probability ``image_share`` a pair starts from a segment that has an image: the image with its text
    against the next segment, or (half of those) the image alone against its own text, the caption-like pair
    ingestion produces. Otherwise it is :class:`PairSampler`'s neighbour or heading pair.
    """

    def __init__(self, path: str, image_share: float, seed: int) -> None:
        from vc2l_retriever.training.data import PairConfig, PairSampler

        self.documents = InterleavedDocuments(path)
        self.sampler = PairSampler(self.documents, PairConfig(max_chars=400, heading_pairs=0.2), seed)
        self.with_images = [(d, i) for d in range(len(self.documents))
                            for i, names in enumerate(self.documents[d].images) if names]
        self.image_share, self.seed = image_share, seed

    def pair(self, index: int) -> tuple[Snippet, Snippet]:
        rng = random.Random(self.seed * 15_485_863 + index)
        if self.with_images and rng.random() < self.image_share:
            d, i = self.with_images[rng.randrange(len(self.with_images))]
            doc = self.documents[d]
            image = self.documents.load_image(doc.images[i][0])
            text = sentence_crop(doc.texts[i], 400, rng)
            if image is not None:
                if rng.random() < 0.5 and len(text.strip()) >= 10:
                    return Snippet(images=[image]), Snippet(text=text)
                if i + 1 < len(doc.texts) and doc.texts[i + 1].strip():
                    return Snippet(text=text, images=[image]), Snippet(text=sentence_crop(doc.texts[i + 1], 400, rng))
        sample = self.sampler.sample(index)
        return sample.a, sample.b


# The ViT trainer's schedule (linear warm-up, cosine), decaying to a tenth of the peak.
lr_factor = functools.partial(trainer_lr_factor, min_ratio=0.1)


def build_module(recipe: DenseRecipe, teacher: TextTeacher) -> VC2LModule:
    """The starting network: from a run, from a model folder, or a fresh stem with the teacher's body."""
    if not recipe.init_from:
        module = VC2LModule(VC2LConfig.from_preset(recipe.preset, **recipe.overrides))
        copy_teacher_body(module.model.body, teacher.bert)
        return module
    config, weights, _ = _weights(Path(recipe.init_from))
    if recipe.init_page_stem:
        config, weights = page_stem_as_stem(config, weights)
    # ``overrides`` may add a stem's pixel branch to a run's model; the branch starts at zero (PixelBranch)
    module = VC2LModule(dataclasses.replace(config, **recipe.overrides))
    missing, unexpected = module.model.load_state_dict(weights, strict=False)
    if unexpected or any(".pixels." not in key for key in missing):
        raise ValueError(f"{recipe.init_from}'s weights do not fit the recipe's model: missing {missing}, "
                         f"unexpected {unexpected}")
    return module


def page_stem_as_stem(config: VC2LConfig, weights: dict[str, torch.Tensor]
                      ) -> tuple[VC2LConfig, dict[str, torch.Tensor]]:
    """A reader with a page stem -> the same reader whose (only) stem is that page stem: what strip training
    trains (``export --text-from`` makes it a page stem again)."""
    if not config.page_stem:
        raise ValueError("init_page_stem: the starting model has no page stem")
    config = dataclasses.replace(config, page_stem=False, stem_pixels=config.page_stem_pixels, page_stem_pixels=0)
    stem = {"stem." + k[len("page_stem."):]: v for k, v in weights.items() if k.startswith("page_stem.")}
    rest = {k: v for k, v in weights.items() if not k.startswith(("stem.", "page_stem."))}
    return config, {**rest, **stem}


class DenseTrainer:
    """Runs one recipe to ``total_samples``, resumable."""

    def __init__(self, recipe: DenseRecipe) -> None:
        self.recipe = recipe
        self.run_dir = Path(recipe.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(recipe.threads)
        torch.manual_seed(recipe.seed)
        self.teacher = TextTeacher()
        self.module = build_module(recipe, self.teacher)
        self.model = self.module.model
        self.config = self.module.config
        self.renderer, self.collator = Renderer(self.config.render), Collator(self.config)
        self.texts = TextMix(recipe.train, recipe.heading_share, recipe.seed)
        self.loss = DenseDistillLoss(
            char_weight=recipe.char_weight,
            layer_weight=0.0 if recipe.stage == "stem" else recipe.layer_weight,
            sentence_weight=0.0 if recipe.stage == "stem" else recipe.sentence_weight,
            contrastive_weight=recipe.contrastive_weight, char_scale_weight=recipe.char_scale_weight,
            char_choice_weight=recipe.char_choice_weight, dim=self.config.embed_dim)
        self.pairs = SnippetPairs(recipe.pair_source, recipe.pair_image_share, recipe.seed) \
            if recipe.pair_weight > 0 else None
        from vc2l_retriever.training.losses import InfoNCELoss

        self.nce = InfoNCELoss(init_temperature=0.05, gather=False)
        self.optimizer = self._optimizer()
        self.samples = 0
        # The strips' teacher: the reader of ``strip_teacher``, else the starting one (before any resume).
        if recipe.strip_weight > 0:
            reader = self.model if not recipe.strip_teacher else build_module(
                dataclasses.replace(recipe, init_from=recipe.strip_teacher, init_page_stem=False, overrides={}),
                self.teacher).model
            self.strips: StripDistill | None = StripDistill(reader, recipe)
        else:
            self.strips = None
        self.tasks = self._tasks()

    def _optimizer(self) -> torch.optim.Optimizer:
        r = self.recipe
        stem = list(self.model.stem.parameters())
        groups = [{"params": stem, "lr": r.lr_stem, "base_lr": r.lr_stem}]
        if r.stage == "all":
            groups.append({"params": list(self.model.body.parameters()), "lr": r.lr_body, "base_lr": r.lr_body})
            groups.append({"params": list(self.nce.parameters()), "lr": r.lr_stem, "base_lr": r.lr_stem,
                           "weight_decay": 0.0})
        else:
            self.model.body.requires_grad_(False)
        return torch.optim.AdamW(groups, weight_decay=r.weight_decay)

    def _tasks(self) -> dict[str, list[Any]]:
        from vc2l_retriever.training.evaluate import build_tasks

        tasks = {}
        for label, path in self.recipe.heldout.items():
            found = build_tasks(InterleavedDocuments(path), self.recipe.eval_queries, self.config.render.max_chars)
            tasks[label] = [t for t in found if t.text_only or self.recipe.pair_weight > 0]
        return tasks

    def pixels(self, snippets: list[Snippet]) -> torch.Tensor:
        """Snippets -> the model's normalised input, padded to the tallest canvas (as ``VC2LModule`` does)."""
        canvases = [self.renderer.render(s) for s in snippets]
        return self.collator.normalize(self.collator.pixels(canvases)["pixel_values"])

    def batch(self, step: int) -> dict[str, Any]:
        """Texts of one step -> canvases, pixels, teacher outputs and aligned targets."""
        r = self.recipe
        cap = random.Random(r.seed * 7919 + step).choice(r.lengths)
        start = step * r.batch_size
        raw = [self.texts.text(start + k, cap) for k in range(r.batch_size)]
        pdf_rows: dict[int, Any] = {}
        if self.strips is not None:
            raw, pdf_rows = self.strips.draw_pdf_lines(raw, start, seed=r.seed * 15_485_863 + step, max_chars=cap)
        texts = [self.renderer.prepare_text(t) for t in raw]
        pixels = self.pixels([Snippet(text=t) for t in texts])
        teacher = self.teacher.run(texts, layers=r.stage != "stem")
        cfg = self.config.render
        n_cells = (pixels.shape[2] // 16) * cfg.columns
        targets = build_targets(texts, teacher, n_cells, self.model.cells_per_token, cfg.columns, cfg.max_rows)
        out = {"texts": texts, "pixels": pixels, "teacher": teacher, "targets": targets}
        if self.strips is not None:
            out.update(self.strips.batch(raw, texts, cfg, self.collator, seed=r.seed * 104_729 + step,
                                         pdf_rows=pdf_rows))
        return out

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.model.train()
        if self.recipe.stage == "stem":
            cells, _, _ = self.model.tokens(batch["pixels"])
            out, extra = None, {"cells": cells}
        else:
            out, extra = self.model(batch["pixels"], hidden_states=True)
        terms = self.loss(out, extra, batch["targets"], batch["teacher"], self.teacher.word_table)
        if self.strips is not None:
            r = self.recipe
            weights = {"strip": r.strip_weight, "anchor": r.anchor_weight, "strip_choice": r.strip_choice_weight,
                       "strip_sentence": r.strip_sentence_weight}
            for name, value in self.strips.losses(self.model, batch, extra["cells"], self.teacher.word_table).items():
                terms[name] = value
                terms["total"] = terms["total"] + weights[name] * value
        if self.pairs is not None:
            terms["pairs"] = self.pair_loss(self.samples // self.recipe.batch_size)
            terms["total"] = terms["total"] + self.recipe.pair_weight * terms["pairs"]
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        factor = lr_factor(self.samples, self.recipe.warmup, self.recipe.total_samples)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def pair_loss(self, step: int) -> torch.Tensor:
        """Stage c: symmetric InfoNCE over ``pair_batch`` snippet pairs (both sides through the reader)."""
        assert self.pairs is not None
        n = self.recipe.pair_batch
        pairs = [self.pairs.pair(step * n + k) for k in range(n)]
        return self.nce(self.model(self.pixels([a for a, _ in pairs])), self.model(self.pixels([b for _, b in pairs])))

    def evaluate(self) -> dict[str, Any]:
        from vc2l_retriever.training.evaluate import evaluate, vc2l_encoder

        encode = vc2l_encoder(self.model, self.config)
        results = {label: evaluate(encode, tasks) for label, tasks in self.tasks.items()}
        if self.strips is not None and self.recipe.strip_eval_fonts:
            for label, tasks in self.tasks.items():
                results[f"{label}/strips"] = self.strips.evaluate(self.model, self.collator, encode, tasks)
        return results

    def baseline(self) -> None:
        path = self.run_dir / "baseline.json"
        if path.is_file() or not self.tasks:
            return
        from vc2l_retriever.training.evaluate import evaluate, text_encoder
        from vc2l_retriever.training.teacher import minilm_embedder

        embed, _ = minilm_embedder()
        write_json(path, {label: evaluate(text_encoder(embed), tasks, text_only=True)
                          for label, tasks in self.tasks.items()})

    def log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("%s", json.dumps(record))

    def save(self) -> None:
        state = {"samples": self.samples, "optimizer": self.optimizer.state_dict(),
                 "logit_scale": self.nce.logit_scale.detach().clone()}
        save_checkpoint(self.run_dir, self.samples, self.model.state_dict(), state)

    def resume(self) -> None:
        (self.run_dir / "model_config.json").write_text(json.dumps(self.config.to_dict(), indent=2), "utf-8")
        (self.run_dir / "recipe.json").write_text(json.dumps(dataclasses.asdict(self.recipe), indent=2), "utf-8")
        if read_pointer(self.run_dir) is None:
            return
        weights, state = load_checkpoint(self.run_dir)
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad():
            self.nce.logit_scale.copy_(state.get("logit_scale", self.nce.logit_scale))
        self.samples = int(state["samples"])
        logger.info("resumed %s at %d samples", self.run_dir, self.samples)

    def train(self) -> None:
        r = self.recipe
        self.resume()
        self.baseline()
        if self.samples == 0:
            self.log({"samples": 0, "eval": self.evaluate()})
        window: list[dict[str, float]] = []
        started = time.time()
        while self.samples < r.total_samples:
            terms = self.step(self.batch(self.samples // r.batch_size))
            self.samples += r.batch_size
            window.append(terms)
            if self.samples % r.log_every == 0:
                mean = {k: round(float(np.mean([w[k] for w in window])), 4) for k in window[0]}
                self.log({"samples": self.samples, "loss": mean, "pairs_per_s": round(
                    len(window) * r.batch_size / (time.time() - started), 2), "time": time.time()})
                window, started = [], time.time()
            if self.samples % r.checkpoint_every == 0 or self.samples >= r.total_samples:
                self.save()
            if self.samples % r.eval_every == 0 or self.samples >= r.total_samples:
                self.log({"samples": self.samples, "eval": self.evaluate()})


def _weights(path: Path) -> tuple[VC2LConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, float32 weights and trainer state of a run folder (its latest checkpoint) or a model folder."""
    if not (path / "latest.json").is_file():
        module = VC2LModule.load(os.fspath(path))
        return module.config, {k: v.float() for k, v in module.model.state_dict().items()}, {}
    config = VC2LConfig.from_dict(json.loads((path / "model_config.json").read_text(encoding="utf-8")))
    weights, state = load_checkpoint(path)
    return config, weights, state


def export(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], fp16: bool = True,
           text_from: str | os.PathLike[str] | None = None, render: dict[str, Any] | None = None) -> VC2LModule:
    """A run's latest checkpoint -> a model folder that ``vc2l_retriever.load`` reads (fp16 weights by default).

    ``text_from`` (another run, or a model folder): the model is that one's (text stem and body), and this run's
    stem becomes its *page stem*, which reads page strips (``strips.py``; probes s3-s4 train a stem for pages
    alone). ``render``: render settings of the written model that training does not set, such as how a page is
    read at search time (the shipped model: ``{"page_rows": 5, "page_windows": "lines"}``)."""
    from safetensors.torch import load_file, save_file

    from vc2l_retriever.hub import VC2LSentenceTransformer
    from vc2l_retriever.st_module import WEIGHTS_NAME

    run = Path(run_dir)
    config, weights, state = _weights(run)
    if text_from is not None:
        page_config = config
        config, text_weights, _ = _weights(Path(text_from))
        config = dataclasses.replace(config, page_stem=True, page_stem_pixels=page_config.stem_pixels)
        pages = {"page_stem." + k[len("stem."):]: v for k, v in weights.items() if k.startswith("stem.")}
        weights = {**{k: v for k, v in text_weights.items() if not k.startswith("page_stem.")}, **pages}
    if render:
        config = dataclasses.replace(config, render=dataclasses.replace(config.render, **render))
    module = VC2LModule(config)
    module.model.load_state_dict(weights)
    VC2LSentenceTransformer(modules=[module], device="cpu").save(os.fspath(out_dir))
    path = Path(out_dir) / WEIGHTS_NAME
    if fp16:  # the float32 model was saved (sentence-transformers runs it for the card); halve the file after
        save_file({k: v.half() for k, v in load_file(str(path)).items()}, str(path), metadata={"format": "pt"})
        os.chmod(path, 0o644)
    provenance = {"run_dir": str(run), "samples": int(state.get("samples", 0)), "fp16": fp16,
                  **({"text_from": str(text_from)} if text_from is not None else {}),
                  "recipe": json.loads((run / "recipe.json").read_text(encoding="utf-8"))
                  if (run / "recipe.json").is_file() else None}
    write_json(Path(out_dir) / "training_provenance.json", provenance)
    return module


def curve(run_dir: str | os.PathLike[str]) -> str:
    """The run's held-out Recall@1 by samples seen, next to the teacher's (``baseline.json``), as markdown."""
    run = Path(run_dir)
    path = run / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    evals = [r for r in map(json.loads, lines) if "eval" in r]
    if not evals:
        return "(no eval yet)"
    base_path = run / "baseline.json"
    base = json.loads(base_path.read_text(encoding="utf-8")) if base_path.is_file() else {}
    columns = [(s, t) for s, tasks in evals[0]["eval"].items() for t in tasks]
    if not columns:
        return "(no held-out sets in this run's recipe)"
    lines = ["| samples | " + " | ".join(f"{s} {t}" for s, t in columns) + " |",
             "|---:|" + "---|" * len(columns)]
    for record in evals:
        cells = [f"{record['eval'][s][t]['recall@1']:.3f}" for s, t in columns]
        lines.append(f"| {record['samples']:,} | " + " | ".join(cells) + " |")
    teacher = [f"{base[s][t]['recall@1']:.3f}" if t in base.get(s, {}) else "n/a" for s, t in columns]
    lines.append("| MiniLM | " + " | ".join(teacher) + " |")
    return "\n".join(lines)


def render_value(text: str) -> Any:
    """A ``--render`` value: a JSON number or boolean (``5``, ``1.15``, ``true``), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dense distillation of the reader (stages a and b).")
    parser.add_argument("recipe", help="recipe YAML (training/recipes/reader_*.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe keys")
    parser.add_argument("--export", metavar="OUT", help="export the run's latest checkpoint instead of training")
    parser.add_argument("--curve", action="store_true", help="print the run's learning curve and exit")
    parser.add_argument("--text-from", metavar="RUN",
                        help="with --export: RUN's model, with this run's stem as its page stem")
    parser.add_argument("--render", nargs="*", default=[], metavar="KEY=VALUE",
                        help="with --export: render settings of the model written (page_rows=5 page_windows=lines "
                             "lines_alone=all figure_labels=true)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
    recipe = DenseRecipe.from_yaml(args.recipe, args.set)
    if args.curve:
        sys.stdout.write(curve(recipe.run_dir) + "\n")
        return 0
    if args.export:
        render = {k: render_value(v) for k, v in (item.split("=", 1) for item in args.render)}
        export(recipe.run_dir, args.export, text_from=args.text_from, render=render)
        return 0
    DenseTrainer(recipe).train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
