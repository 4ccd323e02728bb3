"""Dense distillation end to end, seconds long: stage a, then stages b+c from it, resume, export, load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import vc2l_retriever
from vc2l_retriever.training.dense_train import DenseRecipe, DenseTrainer, curve, export, lr_factor, render_value


def recipe(tmp_path: Path, corpus: Path, **fields: object) -> DenseRecipe:
    base = {"run_dir": str(tmp_path / "a"), "stage": "stem", "train": {str(corpus): 1.0},
            "heldout": {"held": str(corpus)}, "eval_queries": 4, "eval_every": 4, "checkpoint_every": 2,
            "batch_size": 2, "total_samples": 4, "warmup": 2, "lengths": [40], "pair_source": str(corpus),
            "pair_batch": 2, "log_every": 2}
    return DenseRecipe(**{**base, **fields})  # type: ignore[arg-type]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stage_a_trains_only_the_stem_and_stage_c_trains_everything_with_image_pairs(tmp_path: Path) -> None:
    from test_training import write_corpus

    corpus = write_corpus(tmp_path / "corpus", documents=6)
    stage_a = DenseTrainer(recipe(tmp_path, corpus))
    body_before = {k: v.clone() for k, v in stage_a.model.body.state_dict().items()}
    stem_before = {k: v.clone() for k, v in stage_a.model.stem.state_dict().items()}
    stage_a.train()
    assert all(torch.equal(v, stage_a.model.body.state_dict()[k]) for k, v in body_before.items())
    assert any(not torch.equal(v, stage_a.model.stem.state_dict()[k]) for k, v in stem_before.items())
    records = metrics(tmp_path / "a")
    assert [r["samples"] for r in records if "eval" in r] == [0, 4]
    assert set(records[-1]["eval"]["held"]) == {"title->section", "next-snippet"}
    assert (tmp_path / "a" / "baseline.json").is_file() and "| 4 |" in curve(tmp_path / "a")

    c = recipe(tmp_path, corpus, run_dir=str(tmp_path / "c"), stage="all", init_from=str(tmp_path / "a"),
               pair_weight=0.5, pair_image_share=1.0)
    stage_c = DenseTrainer(c)
    torch.testing.assert_close(stage_c.model.stem.state_dict(), stage_a.model.stem.state_dict())
    stage_c.train()
    losses = [r["loss"] for r in metrics(tmp_path / "c") if "loss" in r]
    assert len(losses) == 2 and {"char", "layer", "sentence", "pairs"} <= set(losses[-1])
    assert all(np.isfinite(v) for v in losses[-1].values())


def test_a_rerun_resumes_from_the_last_checkpoint_and_the_export_loads(tmp_path: Path) -> None:
    from test_training import write_corpus

    corpus = write_corpus(tmp_path / "corpus", documents=6)
    DenseTrainer(recipe(tmp_path, corpus, stage="all", heldout={})).train()
    DenseTrainer(recipe(tmp_path, corpus, stage="all", heldout={}, total_samples=6)).train()
    records = metrics(tmp_path / "a")
    assert [r["samples"] for r in records if "loss" not in r and "eval" in r][:1] == [0]
    assert json.loads((tmp_path / "a" / "latest.json").read_text())["step"] == 6
    module = export(tmp_path / "a", tmp_path / "model")
    model = vc2l_retriever.load(tmp_path / "model")
    emb = model.encode(["grid text", {"text": "with an image", "image": corpus.parent / "images" / "ok0.png"}])
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    assert module.config.arch == "reader"


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    assert lr_factor(0, 10, 100) == 0.1
    assert lr_factor(10, 10, 100) == 1.0
    assert abs(lr_factor(100, 10, 100) - 0.1) < 1e-9


def test_recipe_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("stage: all\nlr_bdy: 1.0\n")
    try:
        DenseRecipe.from_yaml(path)
    except ValueError as e:
        assert "lr_bdy" in str(e)
    else:
        raise AssertionError("a misspelt key must be refused")


def test_the_strip_term_teaches_real_font_strips_from_the_frozen_starting_stem(tmp_path: Path) -> None:
    import pytest
    from test_training import write_corpus

    fonts = "/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"
    held_out = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
    if not Path(held_out).is_file():
        pytest.skip("DejaVu fonts (Debian fonts-dejavu-core) are not installed")
    corpus = write_corpus(tmp_path / "corpus", documents=6)
    trainer = DenseTrainer(recipe(tmp_path, corpus, char_weight=0.0, strip_weight=1.0, strip_choice_weight=1.0,
                                  strip_sentence_weight=1.0, anchor_weight=2.0, strip_fonts=[fonts],
                                  strip_eval_fonts=[held_out]))
    teacher = {k: v.clone() for k, v in trainer.strips.reader.state_dict().items()}
    body_before = {k: v.clone() for k, v in trainer.model.body.state_dict().items()}
    stem_before = {k: v.clone() for k, v in trainer.model.stem.state_dict().items()}
    trainer.train()
    torch.testing.assert_close(trainer.strips.reader.state_dict(), teacher)  # the teacher never moves
    torch.testing.assert_close(trainer.model.body.state_dict(), body_before)  # the sentence term trains the stem
    assert any(not torch.equal(v, trainer.model.stem.state_dict()[k]) for k, v in stem_before.items())
    records = metrics(tmp_path / "a")
    losses = [r["loss"] for r in records if "loss" in r]
    assert {"strip", "anchor", "strip_choice", "strip_sentence"} <= set(losses[-1])
    assert all(np.isfinite(list(losses[-1].values())))
    assert losses[0]["anchor"] < 1e-6  # at the start the student's grid output is the teacher's
    assert set(records[-1]["eval"]["held/strips"]) == {"title->section", "next-snippet"}


def test_a_pixel_branch_joins_a_trained_stem_without_changing_it_and_exports_as_the_page_stem(tmp_path: Path
                                                                                             ) -> None:
    import pytest
    from test_training import write_corpus

    fonts = "/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"
    if not list(Path("/usr/share/fonts/truetype/dejavu").glob("DejaVuSans*.ttf")):
        pytest.skip("DejaVu fonts (Debian fonts-dejavu-core) are not installed")
    corpus = write_corpus(tmp_path / "corpus", documents=6)
    DenseTrainer(recipe(tmp_path, corpus)).train()  # run "a": a text stem and body
    strips = {"char_weight": 0.0, "strip_weight": 1.0, "strip_sentence_weight": 1.0, "strip_fonts": [fonts],
              "strip_teacher": str(tmp_path / "a"), "heldout": {}, "run_dir": str(tmp_path / "p")}
    trainer = DenseTrainer(recipe(tmp_path, corpus, init_from=str(tmp_path / "a"),
                                  overrides={"stem_pixels": 4}, **strips))
    assert trainer.model.stem.pixels is not None and trainer.strips.reader.stem.pixels is None
    pixels = trainer.pixels([vc2l_retriever.Snippet(text="make install")])
    with torch.no_grad():  # the branch starts at zero: the stem reads exactly as the one it was copied from
        torch.testing.assert_close(trainer.model(pixels), trainer.strips.reader(pixels))
    trainer.train()
    assert trainer.model.stem.pixels.cell.weight.abs().sum() > 0  # and it learns
    export(tmp_path / "a", tmp_path / "text", fp16=False)
    text_model = vc2l_retriever.load(tmp_path / "text")
    module = export(tmp_path / "p", tmp_path / "paged", fp16=False, text_from=tmp_path / "a")
    assert (module.config.stem_pixels, module.config.page_stem_pixels, module.config.page_stem) == (0, 4, True)
    paged = vc2l_retriever.load(tmp_path / "paged")
    np.testing.assert_allclose(paged.encode(["typed text"]), text_model.encode(["typed text"]), atol=1e-6)
    assert paged.vc2l.model.page_stem.pixels is not None


def test_a_shipped_readers_page_stem_is_continued_and_exported_back_beside_its_text_stem(tmp_path: Path) -> None:
    import pytest
    from test_training import write_corpus

    fonts = "/usr/share/fonts/truetype/dejavu/DejaVuSans*.ttf"
    if not list(Path("/usr/share/fonts/truetype/dejavu").glob("DejaVuSans*.ttf")):
        pytest.skip("DejaVu fonts (Debian fonts-dejavu-core) are not installed")
    corpus = write_corpus(tmp_path / "corpus", documents=6)
    DenseTrainer(recipe(tmp_path, corpus)).train()  # run "a": a text stem and body
    DenseTrainer(recipe(tmp_path, corpus, init_from=str(tmp_path / "a"), run_dir=str(tmp_path / "p"),
                        char_weight=0.0, strip_weight=1.0, strip_fonts=[fonts], heldout={})).train()
    export(tmp_path / "p", tmp_path / "shipped", fp16=False, text_from=tmp_path / "a")  # a reader with a page stem
    shipped = vc2l_retriever.load(tmp_path / "shipped")

    strips = {"char_weight": 0.0, "strip_weight": 1.0, "strip_sentence_weight": 1.0, "strip_fonts": [fonts],
              "heldout": {}, "run_dir": str(tmp_path / "q"), "init_from": str(tmp_path / "shipped"),
              "strip_teacher": str(tmp_path / "shipped")}
    trainer = DenseTrainer(recipe(tmp_path, corpus, init_page_stem=True, **strips))
    state = shipped.vc2l.model.state_dict()
    assert not trainer.config.page_stem  # the page stem is the stem this run trains
    for key, value in trainer.model.stem.state_dict().items():
        torch.testing.assert_close(value, state[f"page_stem.{key}"])
    for key, value in trainer.strips.reader.stem.state_dict().items():  # taught by the text stem
        torch.testing.assert_close(value, state[f"stem.{key}"])
    trainer.train()
    assert any(not torch.equal(v, state[f"page_stem.{k}"]) for k, v in trainer.model.stem.state_dict().items())

    export(tmp_path / "q", tmp_path / "next", fp16=False, text_from=tmp_path / "shipped",  # a model folder
           render={k: render_value(v) for k, v in (("page_rows", "5"), ("page_windows", "lines"),
                                                   ("lines_alone", "all"), ("figure_labels", "true"))})
    nxt = vc2l_retriever.load(tmp_path / "next")  # reads pages and figures as the shipped model does
    assert nxt.vc2l.config.page_stem
    render = nxt.vc2l.config.render
    assert (render.page_rows, render.page_windows, render.lines_alone, render.figure_labels) == (5, "lines", "all",
                                                                                                 True)
    np.testing.assert_array_equal(nxt.encode(["typed text"]), shipped.encode(["typed text"]))
    moved = nxt.vc2l.model.state_dict()
    for key, value in trainer.model.stem.state_dict().items():
        torch.testing.assert_close(moved[f"page_stem.{key}"], value)
