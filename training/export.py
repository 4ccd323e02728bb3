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
    started_from = _init_provenance(config.model.init_from, run_dir)  # read first: out_dir may be that folder
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
    if started_from is not None:
        provenance["init_from"] = started_from
    Path(out_dir, "training_provenance.json").write_text(json.dumps(provenance, indent=2), encoding="utf-8")
    return model


def _init_provenance(init_from: str | None, run_dir: Path) -> dict[str, object] | None:
    """Where a fine-tune's starting weights came from: the provenance of its ``model.init_from`` folder.

    Exporting a fine-tune over the folder it started from (how the shipped model gets a second stage) replaces
    that folder's provenance, so on a re-export the folder already names this run; its ``init_from`` is the
    starting point then.
    """
    if not init_from:
        return None
    path = Path(init_from, "training_provenance.json")
    if not path.is_file():
        return {"model": str(init_from)}
    found = json.loads(path.read_text(encoding="utf-8"))
    if Path(str(found.get("run_dir", ""))).resolve() == run_dir.resolve():
        return found.get("init_from")  # type: ignore[no-any-return]
    return {"model": str(init_from), **found}
