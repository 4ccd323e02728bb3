"""vc2l-retriever: OCR-free multimodal embeddings. Every input is rendered to pixels and embedded by one ViT.

Data flows one way: input -> :class:`Snippet` -> canvas (``render``) -> network (the ViT of ``model``, or the
reader of ``reader``: a glyph stem and a transformer body) -> embedding, wrapped as a sentence-transformers model
(``st_module``) that :func:`load` returns.
"""

from __future__ import annotations

__version__ = "0.1.0"

from vc2l_retriever.hub import (  # noqa: E402
    VC2LSentenceTransformer,
    available_models,
    convert_checkpoint,
    create,
    load,
)
from vc2l_retriever.inputs import InputError, Snippet, to_snippet, to_snippets  # noqa: E402
from vc2l_retriever.model import PRESETS, VC2LConfig, VisionTransformer, build_network  # noqa: E402
from vc2l_retriever.reader import Reader  # noqa: E402
from vc2l_retriever.render import RenderConfig, Renderer, render  # noqa: E402
from vc2l_retriever.st_module import VC2LModule  # noqa: E402

__all__ = [
    "PRESETS",
    "InputError",
    "Reader",
    "RenderConfig",
    "Renderer",
    "Snippet",
    "VC2LConfig",
    "VC2LModule",
    "VC2LSentenceTransformer",
    "VisionTransformer",
    "__version__",
    "available_models",
    "build_network",
    "convert_checkpoint",
    "create",
    "load",
    "render",
    "to_snippet",
    "to_snippets",
]
