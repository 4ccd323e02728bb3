"""The sentence-transformers 6 ``InputModule``: inputs -> rendered canvases -> ViT -> embeddings.

``preprocess`` renders (this is where a text model would tokenize) and emits ``pixel_values``, batch-first, the
key the sentence-transformers trainer and CachedMNRL expect. ``forward`` runs the ViT and writes
``sentence_embedding``. The config is saved as ``vc2l_config.json`` (not ``config.json``, which the Hub would read
as a transformers config), the weights as ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules.input_module import InputModule

from vc2l_retriever.inputs import InputError, to_snippet
from vc2l_retriever.model import VC2LConfig, build_network, pixel_normalizer
from vc2l_retriever.render import Drawn, Renderer

CONFIG_NAME = "vc2l_config.json"
WEIGHTS_NAME = "model.safetensors"


class VC2LModule(InputModule):
    """One vision transformer for text, images and interleaved text+image snippets."""

    config_file_name = CONFIG_NAME
    save_in_root = True

    def __init__(self, config: VC2LConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, VC2LConfig) else VC2LConfig(**(config or {}))
        self.model = build_network(self.config)
        self.renderer = Renderer(self.config.render)
        mean, std = pixel_normalizer(self.config)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def modalities(self) -> list[Any]:
        """Text, images, text+image dicts, and "message": sentence-transformers labels a mixed batch that way."""
        return ["text", "image", ("image", "text"), "message"]

    def get_embedding_dimension(self) -> int:
        """Size of the output vectors."""
        return self.config.embed_dim

    def get_config_dict(self) -> dict[str, Any]:
        """The full model config, renderer included."""
        return self.config.to_dict()

    def render_inputs(self, inputs: Sequence[Any], prompt: str | None = None
                      ) -> tuple[list[np.ndarray], list[int], list[bool]]:
        """Coerce and render each input; errors name the input's index. Returns the canvases and, per canvas, the
        input it belongs to and whether it holds page strips: one canvas an input, except a document image, read
        as several canvases of its text lines (``render.py``)."""
        canvases: list[np.ndarray] = []
        owners: list[int] = []
        pages: list[bool] = []
        for i, item in enumerate(inputs):
            drawn = self._draw(i, item, prompt)
            canvases += drawn.canvases
            owners += [i] * len(drawn.canvases)
            pages += [drawn.page] * len(drawn.canvases)
        return canvases, owners, pages

    def _draw(self, i: int, item: Any, prompt: str | None = None, windows: bool = False) -> Drawn:
        snippet = to_snippet(item, i)
        if prompt:
            snippet = type(snippet)(text=prompt + snippet.text, images=snippet.images)
        try:
            return self.renderer.draw(snippet, windows)
        except InputError as e:
            raise InputError(f"input {i}: {e}", item=item) from e

    def canvases_to_features(self, canvases: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Stack canvases (padding shorter ones with background) into normalised ``pixel_values``."""
        if not canvases:
            raise ValueError("no inputs to embed")
        height = max(c.shape[0] for c in canvases)
        patch = self.config.patch_size
        batch = np.full((len(canvases), height, canvases[0].shape[1], 3), self.config.render.background, np.uint8)
        for b, canvas in enumerate(canvases):
            batch[b, : canvas.shape[0]] = canvas
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, H, W)
        pixels = (pixels - self.pixel_mean.cpu()) / self.pixel_std.cpu()
        rows = torch.tensor([c.shape[0] // patch for c in canvases], dtype=torch.long)
        return {"pixel_values": pixels, "patch_rows": rows}

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Render a batch of inputs (str, PIL image, Path, ``{"text","image"}`` dict, Snippet) to pixels."""
        canvases, owners, pages = self.render_inputs(inputs, prompt)
        features = self.canvases_to_features(canvases)
        if len(canvases) != len(inputs):
            features["owners"] = torch.tensor(owners, dtype=torch.long)
        if any(pages):
            features["pages"] = torch.tensor(pages, dtype=torch.bool)
        return features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Write ``sentence_embedding`` for ``pixel_values`` (and ``patch_rows`` when canvases were padded)."""
        pixels = features["pixel_values"].to(self.pixel_mean.device, non_blocking=True)
        rows = features.get("patch_rows")
        rows = rows.to(pixels.device) if rows is not None else None
        pages = features.get("pages")
        if pages is not None:  # only the reader renders page strips
            embeddings = self.model(pixels, rows, pages=pages.to(pixels.device))
        else:
            embeddings = self.model(pixels, rows)
        owners = features.get("owners")
        if owners is not None:  # a document read as several canvases: the mean of their unit vectors, renormalised
            owners = owners.to(pixels.device)
            pooled = embeddings.new_zeros(int(owners.max()) + 1, embeddings.shape[1])
            pooled.index_add_(0, owners, F.normalize(embeddings, dim=-1))
            embeddings = F.normalize(pooled, dim=-1)
        features["sentence_embedding"] = embeddings
        return features

    @torch.no_grad()
    def embed_canvases(self, canvases: Sequence[np.ndarray], pages: Sequence[bool], batch_size: int = 32
                       ) -> np.ndarray:
        """Unit vectors ``(n, dim)`` of rendered canvases, each read as page strips where ``pages`` says so."""
        # Batched by height, as sentence-transformers batches texts by length: a short canvas padded to a page's
        # height would cost the page's compute.
        order = sorted(range(len(canvases)), key=lambda i: canvases[i].shape[0])
        parts = []
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            features = self.canvases_to_features([canvases[i] for i in chosen])
            pixels = features["pixel_values"].to(self.pixel_mean.device)
            rows = features["patch_rows"].to(pixels.device)
            flags = [bool(pages[i]) for i in chosen]
            out = (self.model(pixels, rows, pages=torch.tensor(flags, dtype=torch.bool, device=pixels.device))
                   if any(flags) else self.model(pixels, rows))
            parts.append(F.normalize(out.float(), dim=-1).cpu())
        vectors = torch.cat(parts).numpy()
        unsorted = np.empty_like(vectors)
        unsorted[order] = vectors
        return unsorted

    @torch.no_grad()
    def points(self, inputs: Sequence[Any], batch_size: int = 32) -> list[np.ndarray]:
        """Each input as the points a dot-product vector store keeps for it: ``(k, dim)`` float32.

        An input read as one canvas is one point, its unit embedding. A page is ``k`` points ``(m + c_i) / 2``:
        ``m`` its embedding as ``encode`` returns it (its canvases' mean, unit) and ``c_i`` the unit vectors of
        its line windows (``page_windows="lines"``: a window of ``page_rows`` rows beginning at each text line,
        and each line alone as ``lines_alone`` says) or of its canvases (``"fold"``). A unit query's best dot
        product with them is ``(q.m + max_i q.c_i) / 2``: the page's mean and its best window scored together,
        which finds far more pages than the mean alone (lab notebook, issue 17: on fresh title queries, 208
        pages at rank 1 with line windows and every line alone, 138 with line windows, 120 with the canvases, 79
        with the mean alone).
        """
        drawn = [self._draw(i, item, windows=True) for i, item in enumerate(inputs)]
        canvases = [c for d in drawn for c in d.canvases + d.windows]
        pages = [d.page for d in drawn for _ in d.canvases + d.windows]
        vectors = self.embed_canvases(canvases, pages, batch_size)
        out_points, at = [], 0
        for d in drawn:
            mine = vectors[at:at + len(d.canvases)]
            windows = vectors[at + len(d.canvases):at + len(d.canvases) + len(d.windows)]
            at += len(d.canvases) + len(d.windows)
            mean = mine.mean(0)
            mean /= max(float(np.linalg.norm(mean)), 1e-12)
            out_points.append(((mean + (windows if len(d.windows) else mine)) / 2).astype(np.float32))
        return out_points

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write ``vc2l_config.json`` and ``model.safetensors`` (always safetensors: no pickles)."""
        os.makedirs(output_path, exist_ok=True)
        with open(os.path.join(output_path, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.get_config_dict(), f, indent=2)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        weights = os.path.join(output_path, WEIGHTS_NAME)
        save_file(state, weights, metadata={"format": "pt"})
        # safetensors writes through a private temporary file (mode 0600); a saved model must be readable by others.
        os.chmod(weights, 0o644)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> VC2LModule:
        """Load from a local folder holding ``vc2l_config.json`` and ``model.safetensors``."""
        folder = os.path.join(model_name_or_path, subfolder)
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as f:
            module = cls(json.load(f))
        state = load_file(os.path.join(folder, WEIGHTS_NAME))
        module.model.load_state_dict(state, strict=True)
        return module
