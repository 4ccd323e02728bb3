"""Encoding speed and memory of a VC2L model against all-MiniLM-L6-v2, measured in one process on one input set.

    .venv/bin/python benchmarks/bench_speed.py --quick                      # about 20 seconds
    .venv/bin/python benchmarks/bench_speed.py --model runs/default/export

On the same 400-character passages (``bench_encode.passage``): passages/s of both models and their ratio, the
share of VC2L's encode time spent rendering, a batch-size sweep, fp32 against bf16 autocast on CPU (with the
cosine between the two embeddings of each passage), 1 against 2 torch threads, and the peak resident memory of a
fresh process that loads each model and encodes the passages. Absolute numbers on a shared machine are noisy;
compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_encode import passage, rate

SCRIPT = Path(__file__).resolve()
N_PASSAGES = 128


def load(which: str, model: str | None) -> Any:
    if which == "vc2l":
        import vc2l_retriever

        return vc2l_retriever.load(model, device="cpu")
    from vc2l_retriever.baselines import load_minilm

    return load_minilm()


def encoder(model: Any, texts: list[str], batch_size: int) -> Callable[[], Any]:
    return lambda: model.encode(texts, batch_size=batch_size, show_progress_bar=False)


def peak_rss_mb(which: str, model: str | None, batch_size: int) -> float:
    """Peak RSS of a fresh process that imports torch, loads ``which`` (or nothing) and encodes the passages."""
    cmd = [sys.executable, str(SCRIPT), "--rss-child", which, "--batch-size", str(batch_size)]
    if model:
        cmd += ["--model", model]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def rss_child(which: str, model: str | None, batch_size: int) -> None:
    import sentence_transformers  # noqa: F401 - the baseline process pays for the same imports

    if which != "none":
        encoder(load(which, model), [passage(400, s) for s in range(N_PASSAGES)], batch_size)()
    # VmHWM, not getrusage: Linux carries ru_maxrss over fork + exec, so a child would report the parent's peak.
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(json.dumps({"peak_rss_mb": peak_kb / 1024}))


def sweep(models: dict[str, Any], texts: list[str], sizes: list[int], seconds: float) -> dict[str, dict[int, float]]:
    return {name: {bs: rate(encoder(m, texts, bs), len(texts), seconds) for bs in sizes} for name, m in models.items()}


def bf16_check(model: Any, texts: list[str], batch_size: int, seconds: float) -> dict[str, float]:
    """fp32 vs bf16-autocast passages/s, and how close the bf16 embeddings stay to the fp32 ones."""
    fp32 = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
    fp32_rate = rate(encoder(model, texts, batch_size), len(texts), seconds)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
        bf16_rate = rate(encoder(model, texts, batch_size), len(texts), seconds)
    cosine = np.sum(fp32 * bf16, axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    return {"fp32": fp32_rate, "bf16": bf16_rate, "min_cosine": float(cosine.min()),
            "mean_cosine": float(cosine.mean())}


def threads(models: dict[str, Any], texts: list[str], batch_size: int, seconds: float) -> dict[str, dict[int, float]]:
    before = torch.get_num_threads()
    out: dict[str, dict[int, float]] = {name: {} for name in models}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for name, m in models.items():
                out[name][n] = rate(encoder(m, texts, batch_size), len(texts), seconds)
    finally:
        torch.set_num_threads(before)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All measurements (see the module docstring) as one dict."""
    seconds = 0.3 if args.quick else 2.0
    texts = [passage(400, s) for s in range(16 if args.quick else N_PASSAGES)]
    models = {"VC2L": load("vc2l", args.model), "MiniLM": load("minilm", None)}
    bs = args.batch_size
    speed = {name: rate(encoder(m, texts, bs), len(texts), seconds) for name, m in models.items()}
    module = models["VC2L"].vc2l
    render_rate = rate(lambda: module.render_inputs(texts), len(texts), seconds)
    sizes = [1, 32] if args.quick else [1, 8, 32, 128]
    report = {
        "model": args.model or "vc2l-default", "batch_size": bs, "torch_threads": torch.get_num_threads(),
        "passages_per_s": speed, "render_per_s": render_rate, "render_share": speed["VC2L"] / render_rate,
        "params_m": {n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in models.items()},
        "batch_sweep": sweep(models, texts, sizes, seconds),
        "bf16": {name: bf16_check(m, texts, bs, seconds) for name, m in models.items()},
        "threads": threads(models, texts, bs, seconds),
    }
    if not (args.no_rss or args.quick):  # three fresh interpreters cost ~30 s on a busy machine
        base = peak_rss_mb("none", None, bs)
        report["peak_rss_mb"] = {"python+torch": base, **{name: peak_rss_mb(which, args.model, bs)
                                                          for name, which in (("VC2L", "vc2l"), ("MiniLM", "minilm"))}}
    return report


def markdown(r: dict[str, Any]) -> str:
    """The measurements as a Markdown table, VC2L ÷ MiniLM in the last column."""
    def row(label: str, ours: float, theirs: float, fmt: str = "{:.1f}") -> str:
        return f"| {label} | {fmt.format(ours)} | {fmt.format(theirs)} | {ours / theirs:.2f}× |"

    v, m = r["passages_per_s"]["VC2L"], r["passages_per_s"]["MiniLM"]
    lines = [f"Model: `{r['model']}` ({r['params_m']['VC2L']:.1f} M parameters; MiniLM "
             f"{r['params_m']['MiniLM']:.1f} M). 400-character passages, batch {r['batch_size']}, "
             f"{r['torch_threads']} torch threads unless stated.", "",
             "| measurement | VC2L | all-MiniLM-L6-v2 | VC2L ÷ MiniLM |", "|---|---:|---:|---:|",
             row("passages/s", v, m)]
    for bs in r["batch_sweep"]["VC2L"]:
        lines.append(row(f"passages/s, batch {bs}", r["batch_sweep"]["VC2L"][bs], r["batch_sweep"]["MiniLM"][bs]))
    for n in (1, 2):
        lines.append(row(f"passages/s, {n} thread{'s' * (n > 1)}", r["threads"]["VC2L"][n], r["threads"]["MiniLM"][n]))
    for name, label in (("fp32", "fp32"), ("bf16", "bf16 autocast")):
        lines.append(row(f"passages/s, {label}", r["bf16"]["VC2L"][name], r["bf16"]["MiniLM"][name]))
    lines.append(f"| bf16 vs fp32 embeddings, worst 1 − cosine | {1 - r['bf16']['VC2L']['min_cosine']:.1e} | "
                 f"{1 - r['bf16']['MiniLM']['min_cosine']:.1e} | |")
    if "peak_rss_mb" in r:
        rss = r["peak_rss_mb"]
        base = rss["python+torch"]
        lines.append(row("peak RSS, MB (load + encode)", rss["VC2L"], rss["MiniLM"], "{:.0f}"))
        lines.append(row("peak RSS above the no-model process, MB", rss["VC2L"] - base, rss["MiniLM"] - base, "{:.0f}"))
        lines.append(f"| peak RSS of python + torch + sentence-transformers, no model, MB | {rss['python+torch']:.0f}"
                     " | | |")
    else:
        lines.append("| peak RSS | not measured (--quick or --no-rss) | | |")
    lines += ["", f"Rendering takes {100 * r['render_share']:.1f}% of VC2L's encode time "
              f"({r['render_per_s']:.0f} passages/s rendered on one core)."]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="VC2L model name or folder (default: the shipped default model)")
    p.add_argument("--quick", action="store_true", help="short timings, batch sizes 1 and 32, no peak-RSS runs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", help="also write the measurements as JSON")
    p.add_argument("--rss-child", choices=["none", "vc2l", "minilm"], help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.model, args.batch_size)
        return
    report = run(args)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
