"""A run folder's checkpoint -> a sentence-transformers model folder that ``vc2l_retriever.load`` reads offline."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from vc2l_retriever.hub import VC2LSentenceTransformer
from vc2l_retriever.st_module import WEIGHTS_NAME, VC2LModule
from vc2l_retriever.training.checkpoint import load_checkpoint
from vc2l_retriever.training.config import TrainConfig

logger = logging.getLogger(__name__)


def export_run(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, which: str = "best",
               fp16: bool = False) -> VC2LSentenceTransformer:
    """Write the ``best`` (falling back to ``latest``) or ``latest`` checkpoint of a run as a model folder.

    Args:
        run_dir: A training run folder (holds ``config.yaml`` and ``checkpoints/``).
        out_dir: Output folder (created; existing model files are replaced).
        which: ``"best"`` (highest held-out score) or ``"latest"``.
        fp16: Store the weights as float16 (half the size; they load back into a float32 model).

    Returns:
        The exported model, loaded on CPU.
    """
    run_dir = Path(run_dir)
    config = TrainConfig.from_yaml(run_dir / "config.yaml")
    if which == "best" and not (run_dir / "best.json").is_file():
        logger.warning("%s has no best checkpoint (no held-out eval ran); exporting the latest", run_dir)
        which = "latest"
    weights, state = load_checkpoint(run_dir, which)
    module = VC2LModule(config.model.build())
    module.model.load_state_dict(weights, strict=True)
    model = VC2LSentenceTransformer(modules=[module], device="cpu")
    model.save(os.fspath(out_dir))
    if fp16:
        from safetensors.torch import save_file

        half = {k: v.detach().to(torch.float16).contiguous() for k, v in module.model.state_dict().items()}
        save_file(half, os.path.join(out_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    # safetensors writes through a private temporary file (mode 0600); a shipped model must be world-readable.
    os.chmod(os.path.join(out_dir, WEIGHTS_NAME), 0o644)
    provenance = {"run_dir": str(run_dir), "checkpoint": which, "step": state.get("step"),
                  "samples": state.get("samples"), "fp16": fp16}
    Path(out_dir, "training_provenance.json").write_text(json.dumps(provenance, indent=2), encoding="utf-8")
    return model
