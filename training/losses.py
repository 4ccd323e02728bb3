"""The training losses, each a small ``nn.Module`` returning a scalar.

- :class:`InfoNCELoss`: the paper's snippet-level contrastive loss (symmetric, CLIP-style, learnable temperature
  clamped like OpenCLIP's ``logit_scale``, per-pair weights for long-range pairs). Under ``torch.distributed``
  the embeddings are all-gathered with gradients, so negatives span the global batch; each rank scores its own
  rows against all columns ("local loss"), which with DDP's gradient averaging equals the single-process loss.
- :class:`GCLLoss`: generalized contrastive learning (GCL): from image-text pairs, the text-only, image-only
  and fused text+image embeddings, contrasted for every pair of modalities in the batch.
- :class:`DistillLoss`: pulls the student's embedding of a rendered text to the text teacher's embedding of the
  same text (cosine or MSE), plus an in-batch contrastive term against the teacher's embeddings. A linear
  head maps the student to the teacher's size when they differ (it is a training head, not exported).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vc2l_retriever.training.distributed import gather_no_grad, gather_with_grad, rank_offset


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy per row, weighted, averaged by the number of rows (not the weight sum, as the paper)."""
    losses = F.cross_entropy(logits, targets, reduction="none")
    if weights is not None:
        losses = losses * weights
    return losses.mean()


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE over a batch of ``(a_k, b_k)`` pairs.

    Args:
        init_temperature: Starting temperature (logit scale = 1 / temperature).
        max_logit_scale: Clamp of the learnable scale (OpenCLIP: 100, i.e. temperature >= 0.01).
        learn_temperature: Train the scale (else it stays at its initial value).
        gather: Use every rank's embeddings as negatives (under ``torch.distributed``).
    """

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0,
                 learn_temperature: bool = True, gather: bool = True) -> None:
        super().__init__()
        self.gather = gather
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)
        self.max_log = math.log(max_logit_scale)

    def scale(self) -> torch.Tensor:
        """The clamped logit scale (1 / temperature)."""
        return self.logit_scale.clamp(max=self.max_log).exp()

    def forward(self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Loss for L2-normalised ``a`` and ``b`` of shape ``(B, D)``; ``weights`` ``(B,)`` per pair."""
        if self.gather:
            all_a, all_b = gather_with_grad(a), gather_with_grad(b)
            targets = torch.arange(a.shape[0], device=a.device) + rank_offset(a.shape[0])
        else:
            all_a, all_b = a, b
            targets = torch.arange(a.shape[0], device=a.device)
        scale = self.scale()
        logits_ab = scale * a @ all_b.T  # (B, global B): my a against every b
        logits_ba = scale * b @ all_a.T
        return 0.5 * (weighted_cross_entropy(logits_ab, targets, weights)
                      + weighted_cross_entropy(logits_ba, targets, weights))


class GCLLoss(nn.Module):
    """Contrast text-only, image-only and fused embeddings of the same pair against the batch.

    For the three modality pairs (text, image), (text, fused), (image, fused) a symmetric InfoNCE is computed
    with a shared temperature; the loss is their mean. Negatives come from this rank's micro-batch only: the
    number of image-text pairs differs between ranks, so there is no equal-shaped tensor to gather.
    """

    PAIRS = (("text", "image"), ("text", "fused"), ("image", "fused"))

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.nce = InfoNCELoss(init_temperature, max_logit_scale, gather=False)

    def forward(self, text: torch.Tensor, image: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """Each input ``(B, D)``, L2-normalised, row ``k`` from the same image-text pair."""
        embeddings = {"text": text, "image": image, "fused": fused}
        return torch.stack([self.nce(embeddings[x], embeddings[y]) for x, y in self.PAIRS]).mean()


class DistillLoss(nn.Module):
    """Student embeddings of rendered texts -> the teacher's embeddings of the same texts.

    Args:
        student_dim: Student embedding size.
        teacher_dim: Teacher embedding size; a linear head maps the student to it when the sizes differ.
        kind: ``"cosine"`` (1 - cos) or ``"mse"`` (of L2-normalised vectors).
        contrastive_weight: Weight of the in-batch term: student ``k`` must pick teacher ``k`` among the batch.
        temperature: Fixed temperature of the in-batch term.
    """

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "cosine", contrastive_weight: float = 0.1,
                 temperature: float = 0.05) -> None:
        super().__init__()
        if kind not in ("cosine", "mse"):
            raise ValueError(f"kind must be 'cosine' or 'mse', got {kind!r}")
        self.kind, self.contrastive_weight, self.temperature = kind, contrastive_weight, temperature
        self.head = nn.Linear(student_dim, teacher_dim, bias=False) if student_dim != teacher_dim else None

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``student (B, Ds)``, ``teacher (B, Dt)`` normalised; ``mask (B,)`` True where a target exists."""
        if self.head is not None:
            student = self.head(student)
        student = F.normalize(student.float(), dim=-1)
        teacher = F.normalize(teacher.float(), dim=-1)
        if mask is None:
            mask = torch.ones(student.shape[0], dtype=torch.bool, device=student.device)
        m = mask.float()
        count = m.sum().clamp(min=1.0)
        if self.kind == "cosine":
            per_row = 1.0 - (student * teacher).sum(-1)
        else:
            per_row = (student - teacher).pow(2).sum(-1)
        loss = (per_row * m).sum() / count
        if self.contrastive_weight:
            loss = loss + self.contrastive_weight * self._contrastive(student, teacher, m, count)
        return loss

    def _contrastive(self, student: torch.Tensor, teacher: torch.Tensor, m: torch.Tensor,
                     count: torch.Tensor) -> torch.Tensor:
        # Rows without a target (image-only snippets) must not serve as negatives either: mask their columns.
        all_teacher, all_m = gather_no_grad(teacher), gather_no_grad(m)
        logits = student @ all_teacher.T / self.temperature  # (B, global B)
        logits = logits.masked_fill(all_m[None, :] == 0, float("-inf"))
        targets = torch.arange(student.shape[0], device=student.device) + rank_offset(student.shape[0])
        safe = torch.where(m > 0, targets, torch.zeros_like(targets))
        logits = torch.where(m[:, None] > 0, logits, torch.zeros_like(logits))  # no -inf rows for masked rows
        per_row = F.cross_entropy(logits, safe, reduction="none")
        return (per_row * m).sum() / count
