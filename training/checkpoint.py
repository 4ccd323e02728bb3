"""Checkpoints that survive a crash at any moment.

A checkpoint is ``ckpt-<step>.safetensors`` (model weights) plus ``ckpt-<step>.state.pt`` (optimiser, loss
parameters, step, sample position, RNG states: plain tensors and containers only, read back with
``torch.load(weights_only=True)``). Each file is written to a temporary name and renamed, and ``latest.json``
is replaced (atomically) only after both exist, so the last good checkpoint is never overwritten by a partial
write. ``best.json`` points at the checkpoint with the best eval score.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace a small JSON file atomically."""
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2), encoding="utf-8"))


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as weights_only-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor], state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write checkpoint ``step`` and point ``latest.json`` at it; prune older ones (never the best)."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"ckpt-{step:08d}.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
    _atomic_write(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "step": str(step)}))
    _atomic_write(folder / f"ckpt-{step:08d}.state.pt", lambda tmp: torch.save(state, tmp))
    write_json(run_dir / "latest.json", {"step": step, "weights": weights.name})
    _prune(run_dir, keep)
    return weights


def _prune(run_dir: Path, keep: int) -> None:
    folder = run_dir / "checkpoints"
    protected = {read_pointer(run_dir, name) for name in ("latest.json", "best.json")}
    weights = sorted(folder.glob("ckpt-*.safetensors"))
    for path in weights[: max(len(weights) - keep, 0)]:
        if path.name not in protected:
            path.unlink(missing_ok=True)
            path.with_name(path.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)


def read_pointer(run_dir: Path, name: str = "latest.json") -> str | None:
    """File name of the weights a pointer file names, or ``None``."""
    path = run_dir / name
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("weights")


def load_checkpoint(run_dir: Path, which: str = "latest") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(model weights, training state)`` of the ``latest`` or ``best`` checkpoint of a run."""
    name = read_pointer(run_dir, f"{which}.json")
    if name is None:
        raise FileNotFoundError(f"{run_dir} has no {which} checkpoint ({which}.json missing)")
    weights = run_dir / "checkpoints" / name
    state_path = weights.with_name(name.replace(".safetensors", ".state.pt"))
    state = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.is_file() else {}
    return load_file(str(weights)), state
