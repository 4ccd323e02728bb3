"""The training loop: a plain PyTorch loop around :class:`Trainer`, configured by :class:`TrainConfig`.

One optimiser step takes ``optim.batch_size`` pairs in total, split over ranks and ``optim.accumulation``
micro-batches (contrastive negatives come from one micro-batch, gathered over ranks). Both sides of every pair,
plus the three views GCL needs, go through the ViT in one forward pass (padded to the tallest canvas; padding is
masked), so DDP sees one forward per backward.

Launch: ``vc2l train CONFIG.yaml`` (one process) or ``torchrun --nproc-per-node N -m
vc2l_retriever.training.trainer CONFIG.yaml`` (DDP: NCCL on GPU, Gloo on CPU). A run folder that already holds
a checkpoint is resumed: same samples, same schedule, same numbers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vc2l_retriever.model import VisionTransformer, count_parameters
from vc2l_retriever.training import checkpoint as ckpt
from vc2l_retriever.training.config import TrainConfig
from vc2l_retriever.training.data import Collator, InterleavedDocuments, PairDataset, PairSampler, SampleRange
from vc2l_retriever.training.distributed import DistInfo, all_reduce_mean, is_distributed, setup
from vc2l_retriever.training.evaluate import build_tasks, evaluate, text_encoder, vc2l_encoder, wordnet_task
from vc2l_retriever.training.losses import DistillLoss, GCLLoss, InfoNCELoss
from vc2l_retriever.training.teacher import TeacherCache

logger = logging.getLogger(__name__)

# oneDNN keeps kernels for up to 1,024 input shapes, and height-bucketed batches make hundreds of shapes: the
# default recipe's process grew to 10.9 GB resident. A cache of 8 bounded a test loop at ~0.6 GB instead of
# ~1.1 GB at the same speed. It is read when oneDNN first runs, so it is set at import (a user value wins).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")


class TrainingError(RuntimeError):
    """The run cannot go on (for example a non-finite loss); the message names the step."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(samples: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to ``min_ratio``, as a function of samples seen."""
    if samples < warmup:
        return (samples + 1) / max(warmup, 1)
    progress = min((samples - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Owns the model, losses, optimiser, data and run folder of one training run."""

    def __init__(self, config: TrainConfig, dist_info: DistInfo | None = None) -> None:
        self.config = config
        self.device = _device(config.device)
        self.dist = dist_info or setup(str(self.device))
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.run_dir = Path(config.run_dir)
        self.model_config = config.model.build()
        self.model = VisionTransformer(self.model_config).to(self.device)
        if config.model.init_from:
            from vc2l_retriever.st_module import VC2LModule

            self.model.load_state_dict(VC2LModule.load(config.model.init_from).model.state_dict())
        self.model.set_grad_checkpointing(config.model.grad_checkpointing)
        self.losses = self._build_losses().to(self.device)
        self.optimizer = self._build_optimizer()
        self.ddp: nn.Module = HeightBucketedEncoder(self.model)
        if is_distributed():
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.ddp, device_ids=ids)
        self.samples = 0
        self.step = 0
        self.best_score = -1.0
        self._evaluated_step = -1
        self.teacher = self._build_teacher()
        self.collator = Collator(self.model_config)
        documents = InterleavedDocuments(config.data.train, config.data.image_root)
        self.dataset = PairDataset(PairSampler(documents, config.pairs, config.seed), self.model_config,
                                   gcl=config.loss.gcl > 0)
        self.tasks = self._build_tasks()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.yaml")
        if (self.run_dir / "latest.json").is_file():
            self.resume()

    # --- construction ----------------------------------------------------------------------------------------

    def _build_losses(self) -> nn.ModuleDict:
        cfg = self.config.loss
        losses = nn.ModuleDict()
        if cfg.infonce > 0:
            losses["infonce"] = InfoNCELoss(cfg.init_temperature, cfg.max_logit_scale)
        if cfg.gcl > 0:
            losses["gcl"] = GCLLoss(cfg.init_temperature, cfg.max_logit_scale)
        if cfg.distill > 0:
            losses["distill"] = DistillLoss(self.model_config.embed_dim, 384, cfg.distill_kind,
                                            cfg.distill_contrastive, cfg.distill_temperature)
        if not losses:
            raise ValueError("every loss weight is 0: nothing to train")
        return losses

    def _build_optimizer(self) -> torch.optim.Optimizer:
        # No weight decay on gains, biases, embeddings and temperatures (OpenCLIP's rule).
        decay, no_decay = [], []
        for name, p in list(self.model.named_parameters()) + list(self.losses.named_parameters()):
            if not p.requires_grad:
                continue
            skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name
            (no_decay if skip else decay).append(p)
        o = self.config.optim
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)

    def _build_teacher(self) -> TeacherCache | None:
        if self.config.loss.distill <= 0:
            return None
        folder = Path(self.config.data.teacher_cache or self.run_dir / "teacher_cache")
        if is_distributed():  # append-only files must have one writer
            folder = folder / f"rank{self.dist.rank}"
        d = self.config.data
        return TeacherCache(folder, device=str(self.device), model_path=d.teacher_model,
                            batch_size=d.teacher_batch_size)

    def _build_tasks(self) -> list[Any]:
        if not (self.dist.is_main and self.config.data.heldout):
            return []
        heldout = InterleavedDocuments(self.config.data.heldout, self.config.data.image_root)
        tasks = build_tasks(heldout, self.config.data.eval_queries, self.model_config.render.max_chars)
        if self.config.data.wordnet:
            tasks.append(wordnet_task(self.config.data.wordnet, self.config.data.eval_queries))
        return tasks

    # --- the loop --------------------------------------------------------------------------------------------

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """Lists of ``accumulation`` micro-batches, starting at the current sample position."""
        o, d = self.config.optim, self.config.data
        micro = o.batch_size // self.dist.world // o.accumulation
        if micro * self.dist.world * o.accumulation != o.batch_size:
            raise ValueError(f"batch_size {o.batch_size} must divide by world {self.dist.world} x accumulation")
        sampler = SampleRange(self.samples, o.total_samples, o.batch_size, self.dist.rank, self.dist.world)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=micro, sampler=sampler,
                                             collate_fn=self.collator, num_workers=d.num_workers,
                                             drop_last=True, persistent_workers=False,
                                             pin_memory=self.device.type == "cuda",
                                             prefetch_factor=4 if d.num_workers else None)
        group: list[dict[str, Any]] = []
        for batch in loader:
            group.append(batch)
            if len(group) == o.accumulation:
                yield group
                group = []

    def train(self) -> dict[str, Any]:
        """Run to ``optim.total_samples``; returns the last logged metrics."""
        o = self.config.optim
        logger.info("model %s: %.2fM parameters; starting at sample %d of %d", self.config.model.preset,
                    count_parameters(self.model) / 1e6, self.samples, o.total_samples)
        if self.dist.is_main:  # what the run ran on, for the model card (and anyone comparing runs)
            name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
            self._write_metrics({"start": {"device": name, "world": self.dist.world, "torch": torch.__version__,
                                           "threads": torch.get_num_threads()},
                                 "samples": self.samples, "time": time.time()})
        if self.samples == 0 and self.tasks and self.dist.is_main:
            self._baseline()
            # A fine-tune that only hurts must export the weights it began with (once, also across a resume).
            if self.config.model.init_from and self._evaluated_step != self.step:
                self.save(evaluate_first=True)
        last: dict[str, Any] = {}
        window = {"time": time.perf_counter(), "samples": self.samples, "skipped": 0}
        for group in self.batches():
            terms = self.train_step(group)
            window["skipped"] += sum(b["images_skipped"] for b in group)
            if self.step % self.config.log_every == 0 or self.samples >= o.total_samples:
                last = self._log(terms, window)
            self._maybe_checkpoint()
        if self.dist.is_main and self._evaluated_step != self.step:  # the final weights are always scored
            self.save(evaluate_first=True)
        return last

    def train_step(self, group: list[dict[str, Any]]) -> dict[str, float]:
        """One optimiser step over ``group`` (its micro-batches); returns the loss terms (rank mean)."""
        o = self.config.optim
        for g in self.optimizer.param_groups:
            g["lr"] = o.lr * lr_factor(self.samples, o.warmup_samples, o.total_samples, o.min_lr_ratio)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for k, batch in enumerate(group):
            sync = k == len(group) - 1 or not is_distributed()
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                terms = self.compute_losses(batch)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise TrainingError(f"non-finite loss ({loss.item()}) at step {self.step + 1} "
                                        f"(samples {self.samples}); terms: {self._floats(terms)}")
                (loss / len(group)).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(all_reduce_mean(value.detach())) / len(group)
        self._sync_loss_grads()
        if o.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.samples += o.batch_size
        return totals

    def _sync_loss_grads(self) -> None:
        # Loss parameters (temperatures, the distillation head) live outside DDP: average their gradients here.
        if not is_distributed():
            return
        for p in self.losses.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.dist.world

    def compute_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one micro-batch (``"loss"`` is their sum)."""
        cfg, dev = self.config.loss, self.device
        views = [batch["a"], batch["b"]] + ([batch["gcl"][k] for k in ("text", "image", "fused")]
                                            if "gcl" in batch else [])
        sizes = [v["patch_rows"].shape[0] for v in views]
        # Ragged uint8 canvases travel as they are; cutting into height buckets happens on the device.
        pixels = torch.cat([v["pixel_values"].to(dev, non_blocking=True) for v in views])
        rows = torch.cat([v["patch_rows"] for v in views]).to(dev)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (
            self.device.type == "cuda" and self.config.bf16) else contextlib.nullcontext()
        with autocast:
            emb = self.ddp(pixels, rows).float()
        parts = list(torch.split(emb, sizes))
        a, b = parts[0], parts[1]
        terms: dict[str, torch.Tensor] = {}
        if "infonce" in self.losses:
            terms["infonce"] = cfg.infonce * self.losses["infonce"](a, b, batch["weight"].to(dev))
        if "gcl" in self.losses:
            # Ranks without an image-text pair this step still take part in the collective (with a dummy).
            terms["gcl"] = cfg.gcl * (self.losses["gcl"](*parts[2:5]) if len(parts) == 5 else emb.sum() * 0)
        if "distill" in self.losses:
            texts = batch["text_a"] + batch["text_b"]
            mask = torch.tensor([bool(t.strip()) for t in texts], device=dev)
            targets = torch.zeros(len(texts), 384, device=dev)
            if bool(mask.any()):
                wanted = [t for t in texts if t.strip()]
                targets[mask] = torch.from_numpy(self.teacher.get(wanted)).to(dev)
            terms["distill"] = cfg.distill * self.losses["distill"](torch.cat([a, b]), targets, mask)
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms

    # --- logging, evaluation, checkpoints ----------------------------------------------------------------------

    @staticmethod
    def _floats(terms: dict[str, Any]) -> dict[str, float]:
        return {k: round(float(v.detach() if isinstance(v, torch.Tensor) else v), 6) for k, v in terms.items()}

    def _log(self, terms: dict[str, float], window: dict[str, float]) -> dict[str, Any]:
        now = time.perf_counter()
        rate = (self.samples - window["samples"]) / max(now - window["time"], 1e-9)
        record = {"step": self.step, "samples": self.samples, **{k: round(v, 6) for k, v in terms.items()},
                  "lr": self.optimizer.param_groups[0]["lr"], "samples_per_s": round(rate, 2),
                  "images_skipped": int(window["skipped"]), "time": time.time()}
        if "infonce" in self.losses:
            record["temperature"] = round(1.0 / float(self.losses["infonce"].scale().detach()), 5)
        if self.teacher is not None:
            record["teacher_computed"] = self.teacher.computed
        window.update(time=now, samples=self.samples, skipped=0)
        if self.dist.is_main:
            self._write_metrics(record)
            logger.info("step %d samples %d loss %.4f (%.1f samples/s)", self.step, self.samples,
                        record["loss"], rate)
        return record

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def evaluate(self) -> dict[str, Any]:
        """Held-out retrieval scores of the current model (empty without ``data.heldout``)."""
        if not self.tasks:
            return {}
        return evaluate(vc2l_encoder(self.model, self.model_config), self.tasks)

    def _baseline(self) -> None:
        """Score the text teacher on the same held-out queries once (``baseline.json``)."""
        path = self.run_dir / "baseline.json"
        if path.is_file() or self.config.loss.distill <= 0:
            return
        cache = self.teacher
        results = evaluate(text_encoder(cache.get), self.tasks, text_only=True)
        ckpt.write_json(path, {"model": "all-MiniLM-L6-v2", "results": results})

    def _maybe_checkpoint(self) -> None:
        c, bs = self.config, self.config.optim.batch_size
        crossed = lambda every: every and (self.samples // every) > ((self.samples - bs) // every)  # noqa: E731
        if crossed(c.eval_every_samples) or crossed(c.checkpoint_every_samples):
            if self.dist.is_main:
                self.save(evaluate_first=bool(crossed(c.eval_every_samples)))
            if is_distributed():
                torch.distributed.barrier()

    def save(self, evaluate_first: bool = False) -> None:
        """Checkpoint now (main rank); with ``evaluate_first`` also score it and track the best."""
        results = self.evaluate() if evaluate_first else {}
        state = {"step": self.step, "samples": self.samples, "optimizer": self.optimizer.state_dict(),
                 "losses": self.losses.state_dict(), "rng": ckpt.rng_state(), "best_score": self.best_score,
                 "eval": json.dumps(results)}
        weights = ckpt.save_checkpoint(self.run_dir, self.step, self.model.state_dict(), state,
                                       self.config.keep_checkpoints)
        if results or not self.tasks:
            self._evaluated_step = self.step
        if results:
            score = float(np.mean([r["recall@1"] for r in results.values()]))
            self._write_metrics({"step": self.step, "samples": self.samples, "eval": results, "score": score,
                                 "time": time.time()})
            logger.info("eval at %d samples: %s", self.samples, json.dumps(results))
            if score > self.best_score:
                self.best_score = score
                ckpt.write_json(self.run_dir / "best.json", {"step": self.step, "weights": weights.name,
                                                             "score": score, "eval": results})

    def resume(self) -> None:
        """Restore the latest checkpoint of the run folder (weights, optimiser, losses, position, RNG)."""
        weights, state = ckpt.load_checkpoint(self.run_dir, "latest")
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.losses.load_state_dict(state["losses"])
        self.step, self.samples = int(state["step"]), int(state["samples"])
        if json.loads(state.get("eval", "{}")) or not self.tasks:  # scored already: finishing here adds nothing
            self._evaluated_step = self.step
        self.best_score = float(state.get("best_score", -1.0))
        ckpt.set_rng_state(state["rng"])
        logger.info("resumed %s at step %d (%d samples)", self.run_dir, self.step, self.samples)


class HeightBucketedEncoder(nn.Module):
    """Runs the ViT once per canvas height on a ragged batch, so no canvas is padded (what DDP wraps).

    A batch mixes 2-row queries with 30-row image+text canvases; padding all of them to the tallest would
    multiply the cost of the short ones (measured: up to 8x on the default recipe). Input is the collator's
    ragged form (canvases stacked row-wise, ``uint8``); each bucket is gathered, normalised and encoded, and
    embeddings come back in the input order.
    """

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        self.model = model
        self.normalize = Collator(model.config).normalize  # the one uint8 -> model-input scaling of training

    def forward(self, pixels: torch.Tensor, patch_rows: torch.Tensor) -> torch.Tensor:
        """``pixels (sum of heights, W, 3) uint8``, ``patch_rows (N,)`` -> ``(N, embed_dim)``."""
        patch = self.model.config.patch_size
        starts = (torch.cumsum(patch_rows, 0) - patch_rows) * patch  # first pixel row of each canvas
        order, outputs = [], []
        for rows in patch_rows.unique().tolist():
            index = (patch_rows == rows).nonzero().squeeze(1)
            lines = starts[index, None] + torch.arange(rows * patch, device=pixels.device)[None, :]
            order.append(index)
            outputs.append(self.model(self.normalize(pixels[lines].permute(0, 3, 1, 2))))  # (n, 3, h, W)
        inverse = torch.argsort(torch.cat(order))
        return torch.cat(outputs)[inverse]


def main(argv: list[str] | None = None) -> int:
    """``python -m vc2l_retriever.training.trainer CONFIG.yaml [KEY=VALUE ...]`` (also the torchrun entry point)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        sys.stderr.write("usage: trainer CONFIG.yaml [KEY=VALUE ...]\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Trainer(TrainConfig.from_yaml(args[0]).with_overrides(args[1:])).train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
