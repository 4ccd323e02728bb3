"""Each training loss against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vc2l_retriever.training.losses import DistillLoss, GCLLoss, InfoNCELoss


def _nce(temperature: float) -> InfoNCELoss:
    return InfoNCELoss(init_temperature=temperature, learn_temperature=False)


def test_infonce_matches_hand_computed_value_for_orthogonal_pairs() -> None:
    # logits = 2 * I (temperature 0.5): each row's loss is -log(e^2 / (e^2 + e^0)) = log(1 + e^-2).
    eye = torch.eye(2)
    loss = _nce(0.5)(eye, eye)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_infonce_is_symmetric_and_uses_both_directions() -> None:
    # a0=(1,0), a1=(0.6,0.8); b0=(0.6,0.8), b1=(0,1); temperature 1.
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # a->b rows: [0.6, 0] target 0; [1.0, 0.8] target 1. b->a rows: [0.6, 1.0] target 0; [0, 0.8] target 1.
    ab = [-0.6 + math.log(math.exp(0.6) + 1), -0.8 + math.log(math.exp(1.0) + math.exp(0.8))]
    ba = [-0.6 + math.log(math.exp(0.6) + math.exp(1.0)), -0.8 + math.log(1 + math.exp(0.8))]
    expected = 0.5 * (sum(ab) / 2 + sum(ba) / 2)
    assert _nce(1.0)(a, b).item() == pytest.approx(expected, abs=1e-6)
    assert _nce(1.0)(b, a).item() == pytest.approx(expected, abs=1e-6)


def test_infonce_weights_scale_each_pair_and_average_over_rows() -> None:
    eye = torch.eye(2)
    per_row = math.log(1 + math.exp(-2))
    loss = _nce(0.5)(eye, eye, torch.tensor([1.0, 0.5]))
    assert loss.item() == pytest.approx(per_row * 1.5 / 2, abs=1e-6)


def test_infonce_temperature_is_clamped_at_the_maximum_scale() -> None:
    loss = InfoNCELoss(init_temperature=1e-4, max_logit_scale=100.0)
    assert loss.scale().item() == pytest.approx(100.0, rel=1e-5)
    assert loss.logit_scale.requires_grad


def test_gcl_averages_the_three_modality_pairs() -> None:
    # text = image = fused = I: every pair has logits 2I -> log(1 + e^-2); their mean is the same value.
    eye = torch.eye(2)
    gcl = GCLLoss(init_temperature=0.5)
    assert gcl(eye, eye, eye).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    # Swap the image rows: the (text,image) and (image,fused) terms see the anti-diagonal as positives.
    swapped = eye.flip(0)
    wrong = math.log(1 + math.exp(2))  # -log(e^0 / (e^0 + e^2))
    right = math.log(1 + math.exp(-2))
    assert gcl(eye, swapped, eye).item() == pytest.approx((wrong + right + wrong) / 3, abs=1e-6)


def test_distill_cosine_and_mse_match_hand_values() -> None:
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    cosine = DistillLoss(2, 2, kind="cosine", contrastive_weight=0.0)
    mse = DistillLoss(2, 2, kind="mse", contrastive_weight=0.0)
    assert cosine(student, teacher).item() == pytest.approx(0.4, abs=1e-6)  # 1 - 0.6
    assert mse(student, teacher).item() == pytest.approx(0.8, abs=1e-6)  # 0.4^2 + 0.8^2


def test_distill_in_batch_term_matches_hand_value() -> None:
    eye = torch.eye(2)
    loss = DistillLoss(2, 2, kind="cosine", contrastive_weight=1.0, temperature=0.5)
    # Cosine part 0 (student == teacher); in-batch logits 2I -> log(1 + e^-2) per row.
    assert loss(eye, eye).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_distill_mask_drops_rows_without_a_target_from_loss_and_negatives() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # row 1 has no target (image-only)
    mask = torch.tensor([True, False, True])
    loss = DistillLoss(2, 2, kind="cosine", contrastive_weight=1.0, temperature=1.0)
    cos = (0.0 + (1 - 0.8)) / 2
    # Row 0 logits over columns {0, 2}: [1, 0] target 0; row 2: [0.6, 0.8] target 2.
    nce = ((-1 + math.log(math.e + 1)) + (-0.8 + math.log(math.exp(0.6) + math.exp(0.8)))) / 2
    assert loss(student, teacher, mask).item() == pytest.approx(cos + nce, abs=1e-6)


def test_distill_projects_when_student_and_teacher_sizes_differ() -> None:
    loss = DistillLoss(8, 4)
    assert loss.head is not None and loss.head.weight.shape == (4, 8)
    value = loss(torch.nn.functional.normalize(torch.randn(3, 8), dim=-1), torch.eye(4)[:3])
    value.backward()
    assert loss.head.weight.grad is not None and torch.isfinite(value)
