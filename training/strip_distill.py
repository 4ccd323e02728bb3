"""Self-distillation of real-font line strips into the Unifont reader (issue 17; ``dense_train``'s strip term).

The reader's glyph stem reads Unifont on the grid. Its frozen starting copy is the teacher: a training text is
drawn twice, on the grid in Unifont (the teacher's input) and in a random real font cut into line strips
(``font_strips.py``, the student's input). Every strip cell with a character under its centre is taught the
teacher stem's output at that character's grid cell, so the body after the stem sees what it already
understands. An *anchor* term holds the stem's output on grid text at the teacher's, so typed text reads as
before while the stem learns fonts.

Evaluation draws the queries of the held-out tasks in fonts never trained on, as strips, against documents on the
grid: how well a scanned query finds typed text (a page's own text is ``vc2l eval``'s CSR).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vc2l_retriever.render import RenderConfig, grid_cells
from vc2l_retriever.strips import fold
from vc2l_retriever.training.dense import char_choice_loss, masked_mean, relative_distance
from vc2l_retriever.training.font_strips import Style, font_files, random_style, text_canvases
from vc2l_retriever.training.losses import DistillLoss
from vc2l_retriever.training.pdf_strips import PdfLines


def strip_text(raw: str, grid_text: str) -> str:
    """The text drawn in a real font: the grid's text with its case back where that keeps every index in place."""
    cased = " ".join(raw.split())[: len(grid_text)]
    return cased if len(cased) == len(grid_text) and cased.lower() == grid_text else grid_text


def cell_targets(cell_char: np.ndarray, grid_text: str, columns: int, max_rows: int) -> np.ndarray:
    """Per strip cell, the grid cell of the character under it (-1: no character, or off the grid)."""
    grid = grid_cells(grid_text, columns, max_rows)
    out = np.full(cell_char.shape, -1, np.int64)
    has = (cell_char >= 0) & (cell_char < grid.size)
    out[has] = grid[cell_char[has]]
    return out


def pdf_sources(jsonl: str | None, max_pages: int = 40) -> list[tuple[str, int]]:
    """The PDFs a training JSONL was built from (``meta.source``) that exist here, with their first pages' count."""
    import json

    import pypdfium2 as pdfium

    if not jsonl:
        return []
    found: dict[str, int] = {}
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            source = json.loads(line).get("meta", {}).get("source", "")
            if source.endswith(".pdf") and source not in found and os.path.isfile(source):
                try:
                    doc = pdfium.PdfDocument(source)
                except (pdfium.PdfiumError, OSError):
                    continue
                found[source] = min(len(doc), max_pages)
                doc.close()
    return sorted((pdf, pages) for pdf, pages in found.items() if pages)


def strip_term(student: torch.Tensor, target: torch.Tensor, idx: torch.Tensor, content: torch.Tensor
               ) -> torch.Tensor:
    """Each strip cell's output ``(B, L, D)`` -> the teacher's output at the grid cell ``idx (B, L)`` of the same
    character, as a relative distance, over the cells that have one.

    A cell whose character lies past the grid's content (``content (B,)`` cells) has none: the grid left that
    character blank at its end (a private-use character Unifont draws as nothing, which a real font draws as a
    box), and the teacher's output there is zero by construction. A relative distance to zero is unbounded: one such
    cell made a batch's term 33 times its usual value (lab notebook, fifth session).
    """
    mask = (idx >= 0) & (idx < content[:, None])
    picked = target.gather(1, idx.clamp(0, target.shape[1] - 1)[..., None].expand(-1, -1, target.shape[2]))
    return masked_mean(relative_distance(student.float(), picked.float()), mask)


class StripDistill:
    """Batches and losses of the strip term; holds the frozen teacher stem."""

    def __init__(self, reader: torch.nn.Module, recipe: Any) -> None:
        self.reader = copy.deepcopy(reader).eval().requires_grad_(False)  # the frozen Unifont reader
        self.teacher = self.reader.stem
        self.sentence_weight = recipe.strip_sentence_weight
        self.sentence = DistillLoss(reader.config.width, reader.config.width, kind="cosine", contrastive_weight=0.5,
                                    temperature=0.05)
        self.fonts = font_files(recipe.strip_fonts)
        self.eval_fonts = font_files(recipe.strip_eval_fonts) if recipe.strip_eval_fonts else []
        self.choice_weight = recipe.strip_choice_weight
        self.pdf_share = recipe.strip_pdf_share
        self.pdf_lines = PdfLines(pdf_sources(recipe.strip_pdfs), recipe.seed) if self.pdf_share > 0 else None

    def draw_pdf_lines(self, raw: list[str], start: int, seed: int, max_chars: int
                       ) -> tuple[list[str], dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Replace a ``strip_pdf_share`` of the batch's texts by runs of PDF page lines: the new texts, and per
        replaced row its ribbon pixels and per-cell character index."""
        rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if self.pdf_lines is None:
            return raw, rows
        rng = random.Random(seed)
        out = list(raw)
        for b in range(len(raw)):
            if rng.random() < self.pdf_share:
                sample = self.pdf_lines.sample(start + b, max_chars)
                if sample is not None:
                    out[b], pixels, cell_char = sample
                    rows[b] = (pixels, cell_char)
        return out, rows

    def batch(self, raw: Sequence[str], texts: Sequence[str], cfg: RenderConfig, collator: Any, seed: int,
              pdf_rows: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, torch.Tensor]:
        """The batch's texts as strips (``pdf_rows`` as given, the rest drawn in random fonts): normalised
        pixels and, per strip cell, the grid cell of its character."""
        rng = random.Random(seed)
        styles = [random_style(self.fonts, rng) for _ in texts]
        drawn = [strip_text(r, t) for r, t in zip(raw, texts, strict=True)]
        canvases, chars = text_canvases(drawn, styles, cfg.columns, seed)
        for b, (pixels, cell_char) in (pdf_rows or {}).items():
            canvases[b] = fold(pixels, cfg.columns, max_rows=1 << 30)[0]
            chars[b] = cell_char if drawn[b] == " ".join(raw[b].split()) else np.full_like(cell_char, -1)
        n = max(c.size for c in chars)
        cells = torch.full((len(texts), n), -1, dtype=torch.long)
        for b, (cell_char, text) in enumerate(zip(chars, texts, strict=True)):
            cells[b, : cell_char.size] = torch.from_numpy(cell_targets(cell_char, text, cfg.columns, cfg.max_rows))
        pixels = collator.normalize(collator.pixels(canvases)["pixel_values"])
        return {"strip_pixels": pixels, "strip_cells": cells}

    def losses(self, model: torch.nn.Module, batch: dict[str, Any], grid_cells_out: torch.Tensor,
               word_table: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted terms: ``strip`` (strip cells -> the teacher's grid cells), ``anchor`` (the student's grid
        cells -> the teacher's), and when weighted ``strip_choice`` (the wordpiece under each strip cell, as a
        choice) and ``strip_sentence`` (the strip text's embedding -> the teacher's of the grid text)."""
        grid, strips = batch["pixels"], batch["strip_pixels"]
        pages = torch.ones(strips.shape[0], dtype=torch.bool, device=strips.device)
        content = model.content_cells(grid)
        with torch.no_grad():
            target = self.teacher(grid, content)  # (B, Lg, D)
        terms: dict[str, torch.Tensor] = {}
        if self.sentence_weight:
            embedding, extra = model(strips, hidden_states=True, pages=pages)
            student = extra["cells"]
            with torch.no_grad():
                teacher_embedding = self.reader(grid)
            terms["strip_sentence"] = self.sentence(embedding, teacher_embedding)
        else:
            student, _, _ = model.tokens(strips, pages)  # (B, Ls, D)
        idx = batch["strip_cells"].to(student.device)
        L = min(student.shape[1], idx.shape[1])
        idx = idx[:, :L]
        terms["strip"] = strip_term(student[:, :L], target, idx, content)
        n = min(grid_cells_out.shape[1], target.shape[1])
        inked = torch.arange(n, device=content.device)[None, :] < content[:, None]
        terms["anchor"] = masked_mean(relative_distance(grid_cells_out[:, :n].float(), target[:, :n].float()), inked)
        if self.choice_weight:
            # Which wordpiece each strip cell reads, as stage a's choice among the batch's wordpieces: regression
            # alone lets a stem unsure of a glyph output the average of the candidates (measured: probe s1).
            grid_piece = batch["targets"].cell_piece.to(idx.device)
            piece = grid_piece.gather(1, idx.clamp(0, grid_piece.shape[1] - 1))
            piece = torch.where(idx >= 0, piece, torch.full_like(piece, -1))
            terms["strip_choice"] = char_choice_loss(student[:, :L], piece, batch["teacher"].ids, word_table)
        return terms

    def eval_styles(self, n: int) -> list[Style]:
        """Deterministic held-out styles: the eval fonts in turn, at three sizes, black on white."""
        return [Style(font=self.eval_fonts[k % len(self.eval_fonts)], size=(11, 14, 20)[k % 3],
                      width=(11, 14, 20)[k % 3] * 40) for k in range(n)]

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, collator: Any, encode: Any, tasks: Sequence[Any],
                 batch_size: int = 32) -> dict[str, Any]:
        """Text tasks with queries drawn as strips in the held-out fonts; documents through ``encode`` (grid)."""
        from vc2l_retriever.training.evaluate import score

        was_training = model.training
        model.eval()
        results: dict[str, Any] = {}
        try:
            for task in tasks:
                if not task.text_only:
                    continue
                texts = [" ".join(q.text.split())[:512] for q in task.queries]
                styles = self.eval_styles(len(texts))
                canvases, _ = text_canvases(texts, styles, collator.config.render.columns, seed=0)
                order = sorted(range(len(canvases)), key=lambda k: canvases[k].shape[0])
                q = np.zeros((len(texts), model.config.embed_dim), np.float32)
                for s in range(0, len(order), batch_size):
                    chunk = order[s:s + batch_size]
                    px = collator.normalize(collator.pixels([canvases[k] for k in chunk])["pixel_values"])
                    q[chunk] = model(px, pages=torch.ones(len(chunk), dtype=torch.bool)).float().numpy()
                results[task.name] = {**score(q, encode(task.documents)), "n": len(texts)}
        finally:
            model.train(was_training)
        return results


__all__ = ["StripDistill", "cell_targets", "strip_text"]
