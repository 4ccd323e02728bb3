"""Dense distillation targets and losses: a training signal at every character, every patch and every layer.

Sentence-level distillation gives a pixel model one vector per text to learn language from, which is far too
little on a CPU. On the ``grid`` layout the cell of every character is known (``render.grid_cells``) and the
tokenizer's offsets say which wordpiece covers it, so the teacher can be copied at three depths:

- **per character** (the glyph stem's output at each cell): the teacher's word-embedding row of the wordpiece
  containing that character. Spaces and cells past the text have no target.
- **per patch, per layer** (the body's hidden states): the mean of the teacher's hidden states of the wordpieces
  covering the patch's characters, weighted by how many of its characters each covers. ``[CLS]`` and ``[SEP]``
  match the teacher's ``[CLS]`` and ``[SEP]``.
- **per sentence**: cosine to the teacher's sentence embedding plus an in-batch contrastive term
  (:class:`~vc2l_retriever.training.losses.DistillLoss`).

Each distance is ``(1 - cos) + |s - t|^2 / |t|^2``: the cosine teaches direction, the relative squared error
teaches scale (the body's layer norms and attention are sensitive to it), and neither depends on the absolute
size of a layer's activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vc2l_retriever.render import grid_cells
from vc2l_retriever.training.losses import DistillLoss
from vc2l_retriever.training.teacher_body import TeacherOutput


@dataclass
class DenseTargets:
    """Targets aligned with the reader's cells and tokens. ``L`` cells, ``N`` = tokens + 2."""

    cell_piece: torch.Tensor  # (B, L) wordpiece index (into the teacher's T) of each cell, -1 = no target
    token_weights: torch.Tensor  # (B, N, T) row-normalised overlap of student tokens with teacher wordpieces


def cell_pieces(text: str, offsets: np.ndarray, keep: np.ndarray, columns: int, max_rows: int,
                first_cell: int = 0) -> dict[int, int]:
    """``{cell: wordpiece index}`` for one prepared text: each character's first cell -> the wordpiece covering it.

    ``offsets (T, 2)`` are the tokenizer's character spans, ``keep (T,)`` its attention mask; ``[CLS]``/``[SEP]``
    have empty spans and cover nothing. ``first_cell`` shifts text cells past image tiles.
    """
    cells = grid_cells(text, columns, max_rows)
    out: dict[int, int] = {}
    for j, ((start, end), real) in enumerate(zip(offsets.tolist(), keep.tolist(), strict=True)):
        if not real or end <= start:
            continue
        for k in range(start, min(end, len(cells))):
            if cells[k] >= 0:
                out[first_cell + int(cells[k])] = j
    return out


def build_targets(texts: Sequence[str], teacher: TeacherOutput, n_cells: int, cells_per_token: int,
                  columns: int, max_rows: int, first_cells: Sequence[int] | None = None) -> DenseTargets:
    """Align a teacher batch with the reader's ``n_cells`` cells (its padded canvas) and tokens."""
    B, T = teacher.ids.shape
    k = cells_per_token
    n_tokens = -(-n_cells // k)
    cell_piece = torch.full((B, n_cells), -1, dtype=torch.long)
    weights = torch.zeros(B, n_tokens + 2, T)
    offsets, keep = teacher.offsets.cpu().numpy(), teacher.keep.cpu().numpy()
    for b, text in enumerate(texts):
        first = first_cells[b] if first_cells is not None else 0
        pieces = cell_pieces(text, offsets[b], keep[b], columns, max_rows, first)
        for cell, j in pieces.items():
            if cell < n_cells:
                cell_piece[b, cell] = j
                weights[b, 1 + cell // k, j] += 1.0
        real = int(keep[b].sum())
        weights[b, 0, 0] = 1.0  # [CLS] -> [CLS]
        last_cell = max(pieces) if pieces else first - 1
        sep_at = 1 + (last_cell // k + 1 if last_cell >= 0 else 0)  # where the reader puts [SEP]
        if sep_at < n_tokens + 2:
            weights[b, sep_at, real - 1] = 1.0  # [SEP] -> [SEP]
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1.0)
    return DenseTargets(cell_piece=cell_piece, token_weights=weights)


def relative_distance(student: torch.Tensor, target: torch.Tensor, scale_weight: float = 1.0) -> torch.Tensor:
    """``(1 - cos) + scale_weight * |s - t|^2 / |t|^2`` over the last dimension."""
    cos = F.cosine_similarity(student, target, dim=-1)
    rel = (student - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp(min=1e-6)
    return (1.0 - cos) + scale_weight * rel


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True (zero when nothing is)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def char_loss(cells: torch.Tensor, cell_piece: torch.Tensor, piece_ids: torch.Tensor,
              word_table: torch.Tensor, scale_weight: float = 1.0) -> torch.Tensor:
    """The stem's output at each character cell -> the word row of the wordpiece covering it.

    ``scale_weight`` weighs the relative squared error against the cosine (0: direction only)."""
    L = min(cells.shape[1], cell_piece.shape[1])
    piece = cell_piece[:, :L].to(cells.device)
    mask = piece >= 0
    ids = piece_ids.gather(1, piece.clamp(min=0))  # (B, L) vocabulary id per cell
    return masked_mean(relative_distance(cells[:, :L].float(), word_table[ids].float(), scale_weight), mask)


def char_choice_loss(cells: torch.Tensor, cell_piece: torch.Tensor, piece_ids: torch.Tensor,
                     word_table: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Which wordpiece covers each character, as a choice among the batch's wordpieces (cross-entropy on cosine
    logits): regression alone lets an unsure stem output the average of the candidates, which reads as
    nothing; a choice pushes each cell toward one word row and away from the others."""
    L = min(cells.shape[1], cell_piece.shape[1])
    piece = cell_piece[:, :L].to(cells.device)
    mask = piece >= 0
    ids = piece_ids.gather(1, piece.clamp(min=0))[mask]  # (M,) vocabulary ids of the cells with a target
    vocab, target = torch.unique(ids, return_inverse=True)
    logits = F.normalize(cells[:, :L][mask].float(), dim=-1) @ F.normalize(word_table[vocab].float(), dim=-1).T
    return F.cross_entropy(logits / temperature, target)


def layer_loss(states: torch.Tensor, keep: torch.Tensor, weights: torch.Tensor,
               teacher_states: torch.Tensor) -> torch.Tensor:
    """Every body layer's token states -> the overlap-weighted teacher states, averaged over layers.

    ``states (B, L+1, N, D)`` from the reader, ``weights (B, N', T)`` from :func:`build_targets` (``N' >= N``),
    ``teacher_states (B, L+1, T, D)``.
    """
    N = states.shape[2]
    w = weights[:, :N].to(states.device)
    target = torch.einsum("bnt,bltd->blnd", w, teacher_states.float())
    mask = (w.sum(-1) > 0) & keep  # (B, N)
    per = relative_distance(states.float(), target)  # (B, L+1, N)
    return masked_mean(per, mask[:, None, :].expand_as(per))


class DenseDistillLoss(nn.Module):
    """Weighted sum of the per-character, per-layer and sentence terms (weights 0 switch a term off)."""

    def __init__(self, char_weight: float = 1.0, layer_weight: float = 1.0, sentence_weight: float = 1.0,
                 contrastive_weight: float = 0.5, temperature: float = 0.05, char_scale_weight: float = 1.0,
                 char_choice_weight: float = 0.0, dim: int = 384) -> None:
        super().__init__()
        self.char_weight, self.layer_weight, self.sentence_weight = char_weight, layer_weight, sentence_weight
        self.char_scale_weight, self.char_choice_weight = char_scale_weight, char_choice_weight
        self.sentence = DistillLoss(dim, dim, kind="cosine", contrastive_weight=contrastive_weight,
                                    temperature=temperature)

    def forward(self, out: torch.Tensor, extra: dict[str, torch.Tensor], targets: DenseTargets,
                teacher: TeacherOutput, word_table: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms and their weighted ``total`` for one batch (``out``, ``extra``: the reader's outputs)."""
        terms: dict[str, torch.Tensor] = {}
        if self.char_weight:
            terms["char"] = char_loss(extra["cells"], targets.cell_piece, teacher.ids, word_table,
                                      self.char_scale_weight)
        if self.char_choice_weight:
            terms["choice"] = char_choice_loss(extra["cells"], targets.cell_piece, teacher.ids, word_table)
        if self.layer_weight:
            terms["layer"] = layer_loss(extra["states"], extra["keep"], targets.token_weights, teacher.states)
        if self.sentence_weight:
            terms["sentence"] = self.sentence(out, teacher.sentence)
        terms["total"] = (self.char_weight * terms.get("char", 0.0) + self.layer_weight * terms.get("layer", 0.0)
                          + self.sentence_weight * terms.get("sentence", 0.0)
                          + self.char_choice_weight * terms.get("choice", 0.0))  # type: ignore[assignment]
        return terms


__all__ = ["DenseDistillLoss", "DenseTargets", "build_targets", "cell_pieces", "char_choice_loss", "char_loss",
           "layer_loss",
           "relative_distance"]
