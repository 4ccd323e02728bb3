"""Getting models in and out: shipped models by name, saved folders, fresh presets, the paper's checkpoint.

Our format is a sentence-transformers folder: ``modules.json`` + ``config_sentence_transformers.json`` +
``vc2l_config.json`` + ``model.safetensors``. Nothing here unpickles: our weights are safetensors, and the
paper's ``.pt`` is read with ``torch.load(weights_only=True)``, which refuses arbitrary Python objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from vc2l_retriever import __version__
from vc2l_retriever.inputs import InputError, to_snippets
from vc2l_retriever.model import VC2LConfig
from vc2l_retriever.st_module import VC2LModule

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "vc2l-default"
MODULE_REF = f"{VC2LModule.__module__}.{VC2LModule.__qualname__}"


class VC2LSentenceTransformer(SentenceTransformer):
    """A ``SentenceTransformer`` that knows the VC2L module class.

    Plain ``SentenceTransformer(path)`` refuses module classes outside its own package unless
    ``trust_remote_code=True``; this subclass resolves ours directly (it is installed code, not code from the
    model folder), so ``vc2l_retriever.load`` needs no flag. Saved models record ``vc2l-retriever`` as a
    requirement, so a machine without the package gets an install hint instead of an import error.
    """

    _module_classes: Mapping[str, type[torch.nn.Module]] = {MODULE_REF: VC2LModule}

    def _get_model_config(self) -> dict[str, Any]:
        config = super()._get_model_config()
        config["requirements"] = {
            "vc2l-retriever": {
                "specifier": f">={__version__}",
                "reason": "the VC2L encoder module; install it with `pip install vc2l-retriever`",
            }
        }
        return config

    def encode_points(self, inputs: Sequence[Any], batch_size: int = 32) -> list[np.ndarray]:
        """Each input as its points for a vector store searched by dot product (``VC2LModule.points``): one unit
        vector for a text, an image or a snippet; for a page read line by line, one point a window of its lines,
        whose best dot product with a query scores the page's mean and its best window together."""
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"encode_points takes a list of inputs, got {type(inputs).__name__}")
        to_snippets(list(inputs))  # TypeError naming the original index, before any work is done
        with small_work_threads(len(inputs) if self.device.type == "cpu" else SMALL_ENCODE + 1):
            return self[0].points(list(inputs), batch_size)

    def encode(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: D417
        """``SentenceTransformer.encode``, with errors that name the item's position in *your* list.

        sentence-transformers sorts a batch by length before preprocessing, so errors raised there would name
        positions in the sorted order; here types are checked up front and decoding errors are mapped back.
        """
        if isinstance(inputs, (list, tuple)):
            to_snippets(inputs)  # TypeError naming the original index, before any work is done
        items = len(inputs) if isinstance(inputs, (list, tuple)) else 1
        try:
            with small_work_threads(items if self.device.type == "cpu" else SMALL_ENCODE + 1):
                return super().encode(inputs, *args, **kwargs)
        except InputError as e:
            if not isinstance(inputs, (list, tuple)) or e.item is None:
                raise
            index = next((i for i, x in enumerate(inputs) if x is e.item), None)
            reason = str(e).split(": ", 1)[-1]
            raise InputError(f"input {index}: {reason}", item=e.item) from e.__cause__

    @property
    def vc2l(self) -> VC2LModule:
        """The VC2L input module (renderer, config and ViT)."""
        return self[0]


SMALL_ENCODE = 8  # inputs; at most this many are encoded on one CPU thread (benchmarks/bench_store.py: latency)
_THREADS_LOCK = threading.Lock()
_in_flight = 0


@contextlib.contextmanager
def small_work_threads(items: int) -> Iterator[None]:
    """Run a small encode (a query: up to :data:`SMALL_ENCODE` inputs) on one intra-op thread.

    Splitting a one-query forward pass over torch's thread pool saves little when the cores are idle and costs a
    lot when another process keeps them busy: every op waits for the slowest pool thread to be scheduled (measured
    here: one short query p50 490 ms on two threads against 10 ms on one, beside a training job). torch's thread
    count is process-wide, so it is only lowered when no other encode is running, and restored afterwards.
    """
    global _in_flight
    with _THREADS_LOCK:
        _in_flight += 1
        previous = torch.get_num_threads()
        lower = items <= SMALL_ENCODE and _in_flight == 1 and previous > 1
        if lower:
            torch.set_num_threads(1)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _in_flight -= 1
            if lower:
                torch.set_num_threads(previous)


def _shipped_dir() -> Path:
    return Path(str(resources.files("vc2l_retriever") / "models"))


def available_models() -> list[str]:
    """Names of the models that ship inside the package."""
    root = _shipped_dir()
    return sorted(p.name for p in root.iterdir() if (p / "modules.json").is_file()) if root.is_dir() else []


def load(name_or_path: str | os.PathLike[str] | None = None, *, device: str | None = None) -> VC2LSentenceTransformer:
    """Load a VC2L model as a ``SentenceTransformer``, offline.

    Args:
        name_or_path: A shipped model's name (see :func:`available_models`; ``None`` means the default) or a
            local folder written by ``model.save(...)`` / ``vc2l export`` / ``vc2l convert-checkpoint``.
        device: Torch device; ``None`` lets sentence-transformers choose.
    """
    name = DEFAULT_MODEL if name_or_path is None else os.fspath(name_or_path)
    path = Path(name)
    if not (path / "modules.json").is_file():
        shipped = _shipped_dir() / name
        if not (shipped / "modules.json").is_file():
            names = available_models()
            raise FileNotFoundError(
                f"no VC2L model named or found at {name!r}. Shipped models: {names or 'none'}; "
                "or pass a folder saved with model.save()."
            )
        path = shipped
    return VC2LSentenceTransformer(str(path), device=device, local_files_only=True)


_SHARED: dict[tuple[str, str | None], VC2LSentenceTransformer] = {}
_SHARED_LOCK = threading.Lock()
_ENCODE_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def load_shared(name_or_path: str | os.PathLike[str] | None = None, device: str | None = None
                ) -> VC2LSentenceTransformer:
    """:func:`load`, once per process and path: framework adapters create many embedding objects, one model."""
    name = os.fspath(name_or_path) if name_or_path is not None else ""
    key = (str(Path(name).resolve()) if name and Path(name).exists() else name, device)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = load(name_or_path, device=device)
        return _SHARED[key]


def encode_lock(model: Any) -> threading.Lock:
    """One lock per model. Async callers run ``encode`` in threads; parallel forward passes on one model would
    only oversubscribe the CPU."""
    with _SHARED_LOCK:
        return _ENCODE_LOCKS.setdefault(model, threading.Lock())


def create(config: VC2LConfig | str = "micro", *, device: str | None = None, seed: int | None = None,
           **overrides: Any) -> VC2LSentenceTransformer:
    """A freshly initialised model from a preset name (see ``PRESETS``) or a config."""
    cfg = VC2LConfig.from_preset(config, **overrides) if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    return VC2LSentenceTransformer(modules=[VC2LModule(cfg)], device=device)


# --- The paper's checkpoint ---------------------------------------------------------------------------------


class CheckpointMismatchError(ValueError):
    """The checkpoint's vision tower does not match the model: lists the offending keys."""


def read_paper_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a VC2L/OpenCLIP checkpoint (``.pt``) and return its vision tower, keys without ``visual.``.

    Accepts a bare state dict or one under ``"state_dict"``, with or without DDP's ``module.`` prefix. Keys
    outside ``visual.`` (``logit_scale``, a text tower) are ignored. Refuses pickled objects other than tensors
    and plain containers (``weights_only=True``).
    """
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{path}: expected a state dict, got {type(obj).__name__}")
    visual: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")
        if key.startswith("visual."):
            visual[key.removeprefix("visual.")] = value
    if not visual:
        raise CheckpointMismatchError(f"{path}: no 'visual.' keys; is this an OpenCLIP/VC2L checkpoint?")
    return visual


def load_vision_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict, checked copy: every missing, unexpected or mis-shaped key is reported, then nothing is loaded."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = [f"{label}: {items}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if items]
        raise CheckpointMismatchError("checkpoint does not match the model; " + "; ".join(parts))
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(state[key].to(target.dtype))


def convert_checkpoint(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                       preset: str = "B/16-448", max_chars: int = 768) -> VC2LSentenceTransformer:
    """Convert the paper's ``.pt`` to our format (``vc2l convert-checkpoint``). Returns the loaded model."""
    base = VC2LConfig.from_preset(preset)
    config = replace(base, render=replace(base.render, max_chars=max_chars))
    module = VC2LModule(config)
    load_vision_state(module.model, read_paper_state_dict(path))
    model = VC2LSentenceTransformer(modules=[module], device="cpu")
    model.save(os.fspath(out_dir))
    return model
