"""The one vision transformer that embeds every snippet (VC2L, arXiv 2510.18703).

Parameter names and shapes are exactly OpenCLIP's ``VisionTransformer`` (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks.N.{ln_1,attn,ln_2,mlp.c_fc,mlp.c_proj}``,
``ln_post``, ``proj``), so the paper's released checkpoint loads by a strict, checked copy (``checkpoint.py``).

Departures from OpenCLIP, both off for the paper's preset:
- Canvases may be shorter than the configured maximum (the compact layout). The positional table covers the
  tallest canvas, row-major, and a shorter canvas uses its first rows. Within a batch, canvases are padded to
  the tallest and padded patches are masked out of attention and pooling, so an embedding does not depend on
  what else is in the batch.
- ``pool="mean"`` averages patch tokens instead of taking the class token (it learns faster from scratch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vc2l_retriever.render import CELL_W, RenderConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VC2LConfig:
    """Architecture plus the renderer it was trained with (a model always renders the way it was trained).

    ``arch="vit"`` is the paper's ViT (below); ``arch="reader"`` is the glyph stem + BERT-shaped body of
    ``reader.py`` on the ``grid`` layout, which uses ``width``/``layers``/``heads``/``mlp_ratio`` for its body,
    ``patch_width`` for how many 8-px character cells make a token, and the ``stem_*`` fields.
    """

    arch: str = "vit"  # "vit" or "reader"
    width: int = 768  # transformer width D
    layers: int = 12  # residual blocks
    heads: int = 12  # attention heads (D must divide by it)
    mlp_ratio: float = 4.0  # hidden size of the MLP = mlp_ratio * D
    patch_size: int = 16  # patch height (and width unless patch_width is set), stride = size
    patch_width: int | None = None  # wider patches (e.g. 32: ~4 glyphs) halve the tokens; None = square
    embed_dim: int = 512  # output embedding size (the ``proj`` matrix is D x embed_dim)
    pool: str = "cls"  # "cls" (OpenCLIP) or "mean" over real patch tokens
    normalize: bool = True  # L2-normalise the output
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    render: RenderConfig = field(default_factory=RenderConfig)
    stem_width: int = 256  # reader: glyph stem channels
    stem_layers: int = 4  # reader: residual convolutions along the reading order
    stem_kernel: int = 5  # reader: their kernel, in cells
    max_positions: int = 512  # reader: body positions ([CLS] + tokens + [SEP])
    norm_eps: float = 1e-12  # reader: LayerNorm epsilon (BERT's)
    page_stem: bool = False  # reader: a second glyph stem for pages read as line strips (``strips.py``)
    stem_pixels: int = 0  # reader: channels of a pixel-level 2-D conv branch in the glyph stem (0: none)
    page_stem_pixels: int = 0  # reader: the same for the page stem

    def __post_init__(self) -> None:
        if isinstance(self.render, dict):
            self.render = RenderConfig(**self.render)
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)  # type: ignore[assignment]
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.arch not in ("vit", "reader"):
            raise ValueError(f"arch must be 'vit' or 'reader', got {self.arch!r}")
        if self.arch == "reader" and (self.render.layout != "grid" or self.pool != "mean"
                                      or self.embed_dim != self.width):
            raise ValueError("the reader network needs the grid layout, mean pooling and embed_dim == width")
        if (self.page_stem or self.stem_pixels or self.page_stem_pixels) and self.arch != "reader":
            raise ValueError("page_stem, stem_pixels and page_stem_pixels are reader options")
        if self.page_stem_pixels and not self.page_stem:
            raise ValueError("page_stem_pixels needs page_stem")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        # The ViT cuts the canvas into a 2-D grid of patches; the reader groups cells along the reading order, so
        # its tokens may run across a line end (five or six characters a token on a 28-cell line).
        column = CELL_W if self.arch == "reader" else self.patch_w
        if self.render.width % column or self.render.max_height % self.patch_size:
            raise ValueError("the canvas size must be a multiple of the patch size")

    @property
    def patch_w(self) -> int:
        """Patch width in pixels (``patch_size`` for square patches)."""
        return self.patch_width or self.patch_size

    @property
    def grid(self) -> tuple[int, int]:
        """Patch rows and columns of the tallest canvas."""
        return self.render.max_height // self.patch_size, self.render.width // self.patch_w

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON. The render settings at their defaults that older models lack (``page_rows``,
        ``page_windows``, ``lines_alone``, ``figure_labels``) are left out (``RenderConfig.to_dict``), so an
        index's fingerprint of those models (``index.model_identity``) still matches."""
        return {**asdict(self), "render": self.render.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VC2LConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, so a typo never passes silently."""
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VC2LConfig:
        """A named preset (see ``PRESETS``), with fields overridden by keyword.

        A ``render`` override given as a dict changes only the fields it names: ``render={"max_chars": 256}``
        keeps the preset's layout. (Replacing the whole render config silently turned compact presets into
        448x448 official canvases, seven times slower.)
        """
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        preset = PRESETS[name]
        if isinstance(overrides.get("render"), dict):
            overrides["render"] = replace(preset.render, **overrides["render"])
        return replace(preset, **overrides)


_COMPACT = RenderConfig(layout="compact", max_chars=512, max_rows=32, max_images=1)
_GRID = RenderConfig(layout="grid", max_chars=512, max_rows=20, max_images=1)
PRESETS: dict[str, VC2LConfig] = {
    # The paper's released model: ViT-B/16 at 448x448 (784 patches), GELU, 512-d, OpenAI CLIP normalisation.
    "B/16-448": VC2LConfig(),
    # CPU-sized models on the compact canvas (224 wide, height follows the text).
    "S/16-compact": VC2LConfig(width=384, layers=6, heads=6, embed_dim=384, pool="mean", render=_COMPACT),
    "Ti/16-compact": VC2LConfig(width=192, layers=8, heads=3, embed_dim=384, pool="mean", render=_COMPACT),
    # The reader (reader.py): glyph stem + all-MiniLM-L6-v2-shaped body on the grid layout, 4 characters a token.
    "reader-L6": VC2LConfig(arch="reader", width=384, layers=6, heads=12, patch_width=32, embed_dim=384,
                            pool="mean", render=_GRID),
    "reader-micro": VC2LConfig(arch="reader", width=32, layers=2, heads=2, patch_width=32, embed_dim=32,
                               pool="mean", stem_width=16, stem_layers=1, render=replace(_GRID, max_rows=8)),
    # A few-hundred-kilobyte model for tests and smoke runs.
    "micro": VC2LConfig(width=64, layers=2, heads=2, embed_dim=32, pool="mean",
                        render=replace(_COMPACT, max_rows=8, max_chars=256)),
}


class Attention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout (packed in_proj)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, N, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3D)
        q, k, v = qkv.view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, N, D/H)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask (B, 1, 1, N): True = attend
        return self.out_proj(y.transpose(1, 2).reshape(B, N, D))


class MLP(nn.Module):
    """Two linear layers with GELU (OpenCLIP names: c_fc, c_proj)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The stack of blocks, under the name OpenCLIP uses (``transformer.resblocks``)."""

    def __init__(self, config: VC2LConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.layers)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    """Pixels ``(B, 3, H, W)`` -> embeddings ``(B, embed_dim)``."""

    def __init__(self, config: VC2LConfig) -> None:
        super().__init__()
        self.config = config
        D, P = config.width, config.patch_size
        rows, cols = config.grid
        scale = D**-0.5
        patch = (P, config.patch_w)  # (height, width)
        self.conv1 = nn.Conv2d(3, D, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(D))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + rows * cols, D))
        self.ln_pre = nn.LayerNorm(D)
        self.transformer = Transformer(config)
        self.ln_post = nn.LayerNorm(D)
        self.proj = nn.Parameter(scale * torch.randn(D, config.embed_dim))
        self._init_blocks()

    def _init_blocks(self) -> None:
        # OpenCLIP's scheme: small projections that shrink with depth keep the residual stream stable.
        D, L = self.config.width, self.config.layers
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=D**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=(D**-0.5) * ((2 * L) ** -0.5))
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * D) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=(D**-0.5) * ((2 * L) ** -0.5))

    def forward(self, pixel_values: torch.Tensor, patch_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Embed normalised pixels.

        Args:
            pixel_values: ``(B, 3, H, W)`` with ``H`` at most the configured canvas height and ``W`` its width.
            patch_rows: ``(B,)`` number of real patch rows per canvas when canvases were padded to ``H``;
                ``None`` means every patch is real.
        """
        x = self.conv1(pixel_values)  # (B, D, rows, cols)
        B, D, rows, cols = x.shape
        if rows * cols + 1 > self.positional_embedding.shape[0]:
            raise ValueError(f"canvas of {rows}x{cols} patches exceeds the model's {self.config.grid}")
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.positional_embedding[1 : 1 + rows * cols]
        cls = (self.class_embedding + self.positional_embedding[0]).expand(B, 1, D)
        x = self.ln_pre(torch.cat([cls, x], dim=1))  # (B, 1 + N, D)
        keep = None
        if patch_rows is not None and bool((patch_rows < rows).any()):
            patch_index = torch.arange(rows * cols, device=x.device) // cols  # row of each patch
            keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device),
                              patch_index[None, :] < patch_rows[:, None]], dim=1)  # (B, 1 + N)
        x = self.transformer(x, None if keep is None else keep[:, None, None, :])
        x = self.ln_post(x)
        if self.config.pool == "cls":
            pooled = x[:, 0]
        elif keep is None:
            pooled = x[:, 1:].mean(dim=1)
        else:
            weights = keep[:, 1:].to(x.dtype)
            pooled = (x[:, 1:] * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
        out = pooled @ self.proj
        return F.normalize(out, dim=-1) if self.config.normalize else out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Trade compute for memory in training."""
        self.transformer.grad_checkpointing = enable


def build_network(config: VC2LConfig) -> nn.Module:
    """The network a config describes: :class:`VisionTransformer` or the reader (``reader.py``)."""
    if config.arch == "reader":
        from vc2l_retriever.reader import Reader  # reader imports render only; kept lazy for the ViT's users

        return Reader(config)
    return VisionTransformer(config)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (for model cards and logs)."""
    return sum(p.numel() for p in model.parameters())


def pixel_normalizer(config: VC2LConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` shaped ``(1, 3, 1, 1)`` for ``uint8 / 255`` canvases."""
    mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std).view(1, 3, 1, 1)
    return mean, std


__all__ = ["PRESETS", "VC2LConfig", "VisionTransformer", "build_network", "count_parameters", "pixel_normalizer"]
