"""The reader network: a glyph stem that reads character cells, then a transformer body that understands them.

Pixels of a ``grid``-layout canvas (``render.py``) go through:

1. **Glyph stem** (:class:`GlyphStem`): one linear map of each 8x16 cell's pixels (a "glyph embedding"), a few
   residual 1-D convolutions along the reading order (row-major cells, so context runs across line wraps and
   image rows alike), and a linear map into the body's width. Its per-cell output is trained to be the word
   embedding of the text it reads (``training/dense.py``).
2. **Patch tokens**: the cell vectors averaged ``cells_per_token`` at a time (a 16x32 patch: four characters).
3. **Body** (:class:`Body`): a BERT-style post-norm encoder shaped like all-MiniLM-L6-v2's (and initialised from
   it: ``training/teacher_body.py``): learned positions, ``[CLS]`` and ``[SEP]`` vectors around the tokens,
   6 layers of width 384; mean pooling over the real tokens; L2 normalisation.

Text, images and interleaved snippets all take this path: an image tile is 14 rows of 28 cells like any text.
The canvas itself says where the content ends (the last cell that is not plain background), so the network
needs nothing but pixels, and padding a canvas with background (batching) changes no embedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vc2l_retriever.render import CELL_W, GLYPH

if TYPE_CHECKING:
    from vc2l_retriever.model import VC2LConfig


class StemBlock(nn.Module):
    """Pre-norm residual 1-D convolution along the reading order: ``x + gelu(conv(norm(x)))``."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x (B, L, W)``; ``keep (B, L, 1)`` zeroes cells past the content, so padding never leaks in."""
        y = self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return (x + F.gelu(y)) * keep


class PixelBranch(nn.Module):
    """Two 3x3 convolutions at pixel resolution, then one vector per cell: what a linear map of a cell's pixels
    cannot see (strokes at any offset, sizes, weights). Built for the page stem, whose glyphs come from every
    font (lab notebook, probe s7). Its last layer starts at zero, so a stem gains it without changing a reading."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, stride=2)
        self.cell = nn.Conv2d(channels, width, kernel_size=(GLYPH // 2, CELL_W // 2), stride=(GLYPH // 2, CELL_W // 2))
        nn.init.zeros_(self.cell.weight)
        nn.init.zeros_(self.cell.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.cell(F.gelu(self.conv2(F.gelu(self.conv1(pixels)))))


class GlyphStem(nn.Module):
    """Pixels ``(B, 3, H, W)`` -> one vector per character cell ``(B, L, out)``, L = cells in reading order."""

    def __init__(self, width: int, layers: int, kernel: int, out: int, pixels: int = 0) -> None:
        super().__init__()
        self.cell = nn.Conv2d(3, width, kernel_size=(GLYPH, CELL_W), stride=(GLYPH, CELL_W))
        self.pixels = PixelBranch(pixels, width) if pixels else None
        self.blocks = nn.ModuleList(StemBlock(width, kernel) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out)

    def forward(self, pixels: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``cells (B,)``: how many cells hold content; later cells come out as zeros."""
        x = self.cell(pixels)
        if self.pixels is not None:
            x = x + self.pixels(pixels)
        x = x.flatten(2).transpose(1, 2)  # (B, L, width), row-major cells
        keep = (torch.arange(x.shape[1], device=x.device)[None, :] < cells[:, None]).unsqueeze(-1).to(x.dtype)
        x = x * keep
        for block in self.blocks:
            x = block(x, keep)
        return self.out(self.norm(x)) * keep


class BodyLayer(nn.Module):
    """One BERT encoder layer (post-norm): attention, add & norm, GELU MLP, add & norm."""

    def __init__(self, width: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.attn_out = nn.Linear(width, width)
        self.attn_norm = nn.LayerNorm(width, eps=eps)
        self.mlp_in = nn.Linear(width, hidden)
        self.mlp_out = nn.Linear(hidden, width)
        self.mlp_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, N, D)``; ``mask (B, 1, 1, N)`` True where a key may be attended to."""
        B, N, D = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                           attn_mask=mask)
        x = self.attn_norm(x + self.attn_out(y.transpose(1, 2).reshape(B, N, D)))
        return self.mlp_norm(x + self.mlp_out(F.gelu(self.mlp_in(x))))


class Body(nn.Module):
    """BERT's encoder without its vocabulary: input vectors + positions + type, norm, layers.

    ``forward`` takes what BERT's word-embedding lookup would produce, so fed a teacher's own word vectors it
    reproduces the teacher's hidden states exactly (tested in ``tests/test_reader.py``).
    """

    def __init__(self, width: int, layers: int, heads: int, hidden: int, max_positions: int, eps: float) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.zeros(max_positions, width))
        self.token_type = nn.Parameter(torch.zeros(width))
        self.norm = nn.LayerNorm(width, eps=eps)
        self.cls = nn.Parameter(torch.zeros(width))  # the [CLS] and [SEP] input vectors
        self.sep = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(BodyLayer(width, heads, hidden, eps) for _ in range(layers))
        nn.init.normal_(self.positions, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.sep, std=0.02)

    def wrap(self, tokens: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[CLS] tokens [SEP]`` per row (``counts`` real tokens each), padded; returns inputs and a key mask."""
        B, N, D = tokens.shape
        x = torch.cat([self.cls.expand(B, 1, D), tokens, torch.zeros_like(tokens[:, :1])], dim=1)
        rows = torch.arange(B, device=tokens.device)
        x = x.index_put((rows, counts + 1), self.sep.to(x.dtype).expand(B, D))
        keep = torch.arange(N + 2, device=tokens.device)[None, :] <= counts[:, None] + 1
        return x, keep

    def forward(self, x: torch.Tensor, keep: torch.Tensor, hidden_states: bool = False
                ) -> torch.Tensor | list[torch.Tensor]:
        """``x (B, N, D)`` input vectors, ``keep (B, N)``; the last layer's output, or every layer's."""
        if x.shape[1] > self.positions.shape[0]:
            raise ValueError(f"{x.shape[1]} tokens exceed the body's {self.positions.shape[0]} positions")
        h = self.norm(x + self.positions[: x.shape[1]] + self.token_type)
        states = [h]
        mask = keep[:, None, None, :]
        for layer in self.layers:
            h = layer(h, mask)
            states.append(h)
        return states if hidden_states else h


class Reader(nn.Module):
    """Pixels of a grid canvas ``(B, 3, H, W)`` -> embeddings ``(B, embed_dim)``. Config: ``VC2LConfig``."""

    def __init__(self, config: VC2LConfig) -> None:
        super().__init__()
        self.config = config
        if config.patch_w % CELL_W or config.patch_size != GLYPH:
            raise ValueError(f"the reader needs {GLYPH}-px-high patches a whole number of {CELL_W}-px cells wide")
        self.cells_per_token = config.patch_w // CELL_W
        self.stem = GlyphStem(config.stem_width, config.stem_layers, config.stem_kernel, config.width,
                              config.stem_pixels)
        # Pages, scans and screenshots arrive as glyph cells cut from real fonts (``strips.py``); a stem of their
        # own learns those without moving how typed text on the grid reads (lab notebook, probes s3-s4).
        self.page_stem = GlyphStem(config.stem_width, config.stem_layers, config.stem_kernel, config.width,
                                   config.page_stem_pixels) if config.page_stem else None
        self.body = Body(config.width, config.layers, config.heads, int(config.width * config.mlp_ratio),
                         config.max_positions, config.norm_eps)
        from vc2l_retriever.model import pixel_normalizer  # model.py builds this class: imported late, no cycle

        mean, std = pixel_normalizer(config)
        background = (config.render.background / 255 - mean) / std
        self.register_buffer("background", background, persistent=False)

    def content_cells(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B,)`` cells up to and including the last one with any non-background pixel (at least one)."""
        B, _, H, W = pixels.shape
        ink = (pixels - self.background).abs().amax(dim=1) > 1e-3  # (B, H, W)
        ink = ink.view(B, H // GLYPH, GLYPH, W // CELL_W, CELL_W).any(dim=4).any(dim=2).flatten(1)  # (B, L)
        last = torch.where(ink, torch.arange(1, ink.shape[1] + 1, device=ink.device), 0).amax(dim=1)
        return last.clamp(min=1)

    def read_cells(self, pixels: torch.Tensor, cells: torch.Tensor, pages: torch.Tensor | None) -> torch.Tensor:
        """Cell vectors: rows flagged in ``pages`` through the page stem (when the model has one)."""
        if self.page_stem is None or pages is None or not bool(pages.any()):
            return self.stem(pixels, cells)
        if bool(pages.all()):
            return self.page_stem(pixels, cells)
        text = self.stem(pixels[~pages], cells[~pages])
        x = text.new_zeros(pixels.shape[0], *text.shape[1:])
        x[~pages] = text
        x[pages] = self.page_stem(pixels[pages], cells[pages])
        return x

    def tokens(self, pixels: torch.Tensor, pages: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cell vectors ``(B, L, D)``, patch tokens ``(B, N, D)`` and real tokens per row ``(B,)``. ``pages
        (B,)`` flags canvases of page strips (see :meth:`read_cells`)."""
        cells = self.content_cells(pixels)
        x = self.read_cells(pixels, cells, pages)
        B, L, D = x.shape
        k = self.cells_per_token
        pad = -L % k
        grouped = F.pad(x, (0, 0, 0, pad)).view(B, (L + pad) // k, k, D)
        counts = torch.div(cells + k - 1, k, rounding_mode="floor")
        filled = (cells[:, None] - k * torch.arange(grouped.shape[1], device=x.device)[None, :]).clamp(0, k)
        tokens = grouped.sum(2) / filled.clamp(min=1).unsqueeze(-1).to(x.dtype)  # a last, partial patch: its mean
        return x, tokens[:, : int(counts.max())], counts

    def forward(self, pixel_values: torch.Tensor, patch_rows: torch.Tensor | None = None,
                hidden_states: bool = False, pages: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Embed normalised pixels. ``patch_rows`` is accepted for the ViT's signature and not needed: the
        content's end is read from the pixels. ``pages (B,)`` flags canvases of page strips (the renderer knows).
        ``hidden_states=True`` also returns what training distils."""
        cells, tokens, counts = self.tokens(pixel_values, pages)
        x, keep = self.body.wrap(tokens, counts)
        states = self.body(x, keep, hidden_states=True)
        w = keep.to(states[-1].dtype).unsqueeze(-1)
        pooled = (states[-1] * w).sum(1) / w.sum(1)
        out = F.normalize(pooled, dim=-1) if self.config.normalize else pooled
        if not hidden_states:
            return out
        return out, {"cells": cells, "states": torch.stack(states, dim=1), "keep": keep, "pooled": pooled}


__all__ = ["Body", "GlyphStem", "PixelBranch", "Reader"]
