"""Retrieval evaluation: metrics against hand-computed rankings, protocols on generated sets with known answers
(deterministic stub encoders), one run with the real micro model, and the ``vc2l eval`` command."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vc2l_retriever import evaluation as ev
from vc2l_retriever.cli import main
from vc2l_retriever.inputs import Snippet, open_image

# --------------------------------------------------------------------------------------------- metrics


def test_recall_counts_the_fraction_of_relevant_documents_in_the_top_k() -> None:
    ranked = ["a", "b", "c", "d"]
    assert ev.recall_at_k(ranked, {"c"}, 1) == 0.0
    assert ev.recall_at_k(ranked, {"c"}, 3) == 1.0
    assert ev.recall_at_k(ranked, {"b", "d", "e"}, 2) == pytest.approx(1 / 3)
    assert ev.recall_at_k(ranked, {"b", "d", "e"}, 10) == pytest.approx(2 / 3)


def test_mrr_is_the_reciprocal_rank_of_the_first_relevant_document_within_k() -> None:
    assert ev.mrr_at_k(["x", "y", "r", "s"], {"r", "s"}, 10) == pytest.approx(1 / 3)
    assert ev.mrr_at_k(["x", "y", "r"], {"r"}, 2) == 0.0
    assert ev.mrr_at_k(["r"], {"r"}, 10) == 1.0


def test_ndcg_with_two_relevant_documents_matches_the_hand_computed_value() -> None:
    # DCG = 1/log2(3) + 1/log2(5); ideal = 1/log2(2) + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ev.ndcg_at_k(["x", "r1", "y", "r2"], {"r1", "r2"}, 10) == pytest.approx(expected)
    assert expected == pytest.approx(0.6509, abs=1e-4)
    assert ev.ndcg_at_k(["r1", "r2", "x"], {"r1", "r2"}, 10) == pytest.approx(1.0)
    # more relevant documents than k: the ideal ranking fills the k slots
    assert ev.ndcg_at_k(["r1"], {"r1", "r2", "r3"}, 1) == pytest.approx(1.0)


def test_empty_results_score_zero_and_missing_relevance_is_an_error() -> None:
    assert ev.recall_at_k([], {"a"}, 10) == 0.0
    assert ev.mrr_at_k([], {"a"}, 10) == 0.0
    assert ev.ndcg_at_k([], {"a"}, 10) == 0.0
    with pytest.raises(ValueError, match="undefined"):
        ev.recall_at_k(["a"], set(), 10)
    with pytest.raises(ValueError, match="undefined"):
        ev.ndcg_at_k(["a"], set(), 10)


def test_a_repeated_document_in_a_ranking_counts_once() -> None:
    assert ev.recall_at_k(["a", "a", "b"], {"a", "b"}, 2) == 1.0
    assert ev.mrr_at_k(["x", "x", "r"], {"r"}, 2) == pytest.approx(1 / 2)


def test_ties_are_broken_against_the_relevant_targets() -> None:
    assert ev.rank_targets(np.array([0.5, 0.5, 0.5]), {0}, 3) == [1, 2, 0]
    assert ev.rank_targets(np.array([0.2, 0.9, 0.9, 0.1]), {1}, 2) == [2, 1]
    assert ev.rank_targets(np.array([np.nan, 0.1]), {1}, 2) == [1, 0]
    constant = np.ones((4, 4), np.float32)
    metrics = ev.score_rankings(constant, [{q} for q in range(4)])
    assert metrics["recall@1"] == 0.0 and metrics["recall@5"] == 1.0  # everything ties: only the pool size helps


def test_score_rankings_averages_per_query_metrics() -> None:
    scores = np.array([[0.9, 0.1, 0.3],    # relevant 0 ranked 1st
                       [0.8, 0.1, 0.5]])   # relevant 1 ranked 3rd; relevant 2 ranked 2nd
    metrics = ev.score_rankings(scores, [{0}, {1, 2}], ks=(1, 2))
    assert metrics["recall@1"] == pytest.approx((1 + 0) / 2)
    assert metrics["recall@2"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    ndcg_second = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics["ndcg@10"] == pytest.approx((1 + ndcg_second) / 2)


def test_paired_bootstrap_brackets_a_consistent_gain_and_straddles_zero_for_noise() -> None:
    base = np.array([0.2, 0.5, 0.0, 1.0, 0.3] * 20)
    mean, low, high = ev.paired_bootstrap(base, base + 0.1)
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    flips = np.array([1.0, -1.0] * 50)  # half the queries gain what the other half lose
    mean, low, high = ev.paired_bootstrap(base, base + flips)
    assert mean == pytest.approx(0.0) and low < 0 < high
    assert ev.query_metrics(np.array([[0.9, 0.1], [0.2, 0.8]]), [{0}, {0}], ks=(1,))["recall@1"].tolist() == [1, 0]


def test_grouped_documents_score_their_best_member_and_candidates_restrict_the_pool() -> None:
    def scorer(queries: Sequence[Snippet], documents: Sequence[Snippet]) -> np.ndarray:
        return np.array([[0.1, 0.7, 0.2, 0.6]])

    # documents 0,1 belong to target 0; 2,3 to target 1: target 0 scores 0.7, target 1 scores 0.6
    grouped = ev.RetrievalSet("g", [Snippet(text="q")], [Snippet(text=str(i)) for i in range(4)], [{1}],
                              groups=[0, 0, 1, 1])
    assert ev.evaluate_set(grouped, scorer)["recall@1"] == 0.0
    assert ev.evaluate_set(grouped, scorer)["recall@5"] == 1.0
    restricted = ev.RetrievalSet("c", [Snippet(text="q")], [Snippet(text=str(i)) for i in range(4)], [{3}],
                                 candidates=[[0, 3]])
    result = ev.evaluate_set(restricted, scorer)
    assert result["recall@1"] == 1.0 and result["targets"] == 2.0


# ------------------------------------------------------------------------------------ generated data


def solid(path: Path, code: int) -> str:
    """A small PNG whose red channel encodes ``code``."""
    Image.new("RGB", (32, 32), (code * 10, 40, 200)).save(path)
    return path.name


def write_jsonl(path: Path, documents: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    return path


def pair_documents(tmp_path: Path, n: int = 6) -> Path:
    """``n`` documents of two segments; both carry topic ``k`` as the word ``topic{k}`` and as an image colour."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    docs = []
    for k in range(n):
        a, b = solid(images / f"a{k}.png", k), solid(images / f"b{k}.png", k)
        docs.append({"text": [f"first part about topic{k} with filler", f"second part on topic{k}, other words"],
                     "img": [[{"image_name": a, "matched_text_index": 0}],
                             [{"image_name": b, "matched_text_index": 1}]]})
    return write_jsonl(tmp_path / "pairs.jsonl", docs)


def topic_encoder(n: int, shift: int = 0) -> ev.EncodeFn:
    """One-hot of the topic read from a snippet's text (``topic{k}``) or image (red / 10), moved by ``shift``."""

    def encode(snippets: Sequence[Snippet]) -> np.ndarray:
        out = np.zeros((len(snippets), n), np.float32)
        for row, s in enumerate(snippets):
            for k in map(int, re.findall(r"topic(\d+)", s.text)):
                out[row, (k + shift) % n] += 1
            for image in s.images:
                out[row, (open_image(image).getpixel((0, 0))[0] // 10 + shift) % n] += 1
        return out

    return encode


# ----------------------------------------------------------------------------------------------- AnyCIR


def test_anycir_builds_all_nine_modality_combinations_from_consecutive_pairs(tmp_path: Path) -> None:
    docs = ev.open_documents(pair_documents(tmp_path), tmp_path / "images")
    sets = ev.build_sets(docs, ["anycir"], max_queries=50)
    assert [s.name for s in sets] == [f"anycir:{q}->{t}" for q in ev.MODALITIES for t in ev.MODALITIES]
    for rset in sets:
        query_modality, target_modality = rset.name.removeprefix("anycir:").split("->")
        assert len(rset.queries) == 6 and rset.n_targets == 6
        assert all(bool(s.text) == ("text" in query_modality) for s in rset.queries)
        assert all(bool(s.images) == ("image" in target_modality) for s in rset.documents)
        for query, relevant in zip(rset.queries, rset.relevant, strict=True):
            (target,) = relevant
            # the target is the *next* segment of the query's document
            if "text" in query_modality and "text" in target_modality:
                assert query.text.startswith("first") and rset.documents[target].text.startswith("second")
            if "image" in target_modality:
                assert rset.documents[target].images[0].name.startswith("b")


def test_anycir_with_a_topic_encoder_is_perfect_and_with_a_shifted_one_fails(tmp_path: Path) -> None:
    docs = ev.open_documents(pair_documents(tmp_path), tmp_path / "images")
    sets = ev.build_sets(docs, ["anycir"])
    right = ev.evaluate(sets, ev.dense_scorer(topic_encoder(6)))
    assert all(m["recall@1"] == 1.0 and m["ndcg@10"] == 1.0 for m in right.values())

    def mixed(snippets: Sequence[Snippet]) -> np.ndarray:  # texts and images disagree by one topic
        return np.stack([topic_encoder(6, shift=1 if s.images and not s.text else 0)([s])[0] for s in snippets])

    wrong = ev.evaluate(sets, ev.dense_scorer(mixed))
    assert wrong["anycir:text->image"]["recall@1"] == 0.0
    assert wrong["anycir:text->text"]["recall@1"] == 1.0


def test_pairs_whose_image_is_missing_are_skipped_and_counted(tmp_path: Path) -> None:
    path = pair_documents(tmp_path)
    (tmp_path / "images" / "b0.png").unlink()
    (tmp_path / "images" / "b1.png").write_bytes(b"not a png")
    sets = {s.name: s for s in ev.build_sets(ev.open_documents(path, tmp_path / "images"), ["anycir"])}
    assert len(sets["anycir:text->image"].queries) == 4
    assert sets["anycir:text->image"].stats["images_missing"] == 2
    assert len(sets["anycir:text->text"].queries) == 6


def test_a_corrupt_jsonl_line_skips_one_document(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = pair_documents(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    docs = ev.open_documents(path, tmp_path / "images")
    segments = ev.read_segments(docs)
    assert [len(s) for s in segments] == [2, 2, 0, 2, 2, 2, 2]
    assert "document 2 skipped" in caplog.text


# ----------------------------------------------------------------------------------------------- SeqCIR


def chain_documents(tmp_path: Path, n_docs: int = 3, length: int = 6) -> Path:
    docs = [{"text": [f"document {d} segment pos{j} of the chain" for j in range(length)], "img": []}
            for d in range(n_docs)]
    return write_jsonl(tmp_path / "chains.jsonl", docs)


def chain_encoder(snippets: Sequence[Snippet]) -> np.ndarray:
    """Segment ``pos{j}`` at angle ``1 - 0.5**j``: gaps shrink, so the next segment is always the nearest."""
    angles = [1 - 0.5 ** int(re.search(r"pos(\d+)", s.text).group(1)) for s in snippets]
    return np.array([[math.cos(a), math.sin(a)] for a in angles], np.float32)


def test_seqcir_finds_the_next_snippet_among_its_own_documents_snippets(tmp_path: Path) -> None:
    (rset,) = ev.build_sets(ev.open_documents(chain_documents(tmp_path), tmp_path / "images"), ["seqcir"])
    assert len(rset.queries) == 3 * 5
    assert all(len(c) == 5 for c in rset.candidates)  # the 5 other segments of the same document
    metrics = ev.evaluate_set(rset, ev.dense_scorer(chain_encoder))
    # every document repeats the same angles, so a pool spanning documents would tie and score 0
    assert metrics["recall@1"] == 1.0 and metrics["targets"] == 5.0

    def growing_gaps(snippets: Sequence[Snippet]) -> np.ndarray:  # now the *previous* segment is the nearest
        angles = [0.05 * 2 ** int(re.search(r"pos(\d+)", s.text).group(1)) for s in snippets]
        return np.array([[math.cos(a), math.sin(a)] for a in angles], np.float32)

    # only the first segment of each document (no previous one) still finds its successor
    assert ev.evaluate_set(rset, ev.dense_scorer(growing_gaps))["recall@1"] == pytest.approx(3 / 15)


# ------------------------------------------------------------------------------------------------- text


def test_text_protocol_maps_headings_to_section_bodies_without_the_heading(tmp_path: Path) -> None:
    docs = []
    for k in range(5):
        texts = [f"Setup topic{k}\nThe body of the setup section mentions topic{k} twice: topic{k}.",
                 f"More text of the same section about topic{k} follows here.",
                 "Examples\nAn example section that every document has, so it is ambiguous."]
        docs.append({"text": texts, "img": [], "meta": {"headings": [f"Setup topic{k}", f"Setup topic{k}",
                                                                      "Examples"]}})
    path = write_jsonl(tmp_path / "sections.jsonl", docs)
    (rset,) = ev.build_sets(ev.open_documents(path), ["text"])
    assert sorted(q.text for q in rset.queries) == [f"Setup topic{k}" for k in range(5)]
    assert all(d.text.startswith("The body") for d in rset.documents)  # first snippet only, heading removed
    assert rset.stats["ambiguous"] == 1  # "Examples" has 5 sections
    assert ev.evaluate_set(rset, ev.dense_scorer(topic_encoder(5)))["mrr@10"] == 1.0


def test_text_protocol_guesses_headings_when_the_jsonl_has_no_meta(tmp_path: Path) -> None:
    docs = [{"text": [f"Install topic{k}\nRun the installer for topic{k} and wait.", "A sentence. Another."],
             "img": []} for k in range(3)]
    (rset,) = ev.build_sets(ev.open_documents(write_jsonl(tmp_path / "plain.jsonl", docs)), ["text"])
    assert sorted(q.text for q in rset.queries) == ["Install topic0", "Install topic1", "Install topic2"]


# -------------------------------------------------------------------------------------------------- CSR


def make_pdf(path: Path, titles: list[str], outline: bool) -> Path:
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.set_font("helvetica", size=14)
    for title in titles:
        pdf.add_page()
        if outline:
            pdf.start_section(title)
        pdf.cell(text=title)
        pdf.ln(12)
        pdf.multi_cell(w=0, text=f"Body text of the page called {title}. " * 8)
    pdf.output(str(path))
    return path


def test_csr_pairs_come_from_the_outline_or_else_from_page_titles(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2")
    with_outline = make_pdf(tmp_path / "outline.pdf", ["Alpha section", "Beta section", "Gamma section"], True)
    without = make_pdf(tmp_path / "plain.pdf", ["Delta page", "Epsilon page"], False)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    pairs = ev.csr_pairs([with_outline, without, tmp_path / "broken.pdf"], max_pages=12)
    assert [(p.query, Path(p.pdf).name, p.page, p.origin) for p in pairs] == [
        ("Alpha section", "outline.pdf", 1, "outline"), ("Beta section", "outline.pdf", 2, "outline"),
        ("Gamma section", "outline.pdf", 3, "outline"), ("Delta page", "plain.pdf", 1, "title"),
        ("Epsilon page", "plain.pdf", 2, "title")]
    assert [p.page for p in ev.csr_pairs([with_outline], max_pages=2)] == [1, 2]


def test_csr_set_tiles_every_page_and_points_queries_at_their_page(tmp_path: Path) -> None:
    pytest.importorskip("pypdfium2")
    pdf = make_pdf(tmp_path / "doc.pdf", ["Alpha section", "Beta section", "Gamma section"], True)
    rset = ev.csr_set(ev.csr_pairs([pdf]), tile_dir=tmp_path)
    assert rset.targets == [f"{pdf}#1", f"{pdf}#2", f"{pdf}#3"]
    assert all(s.kind == "page" and not s.text and s.images for s in rset.documents)  # pixels only
    assert sorted(set(rset.groups)) == [0, 1, 2] and len(rset.documents) == rset.stats["tiles"]
    by_query = {q.text: rset.targets[next(iter(r))] for q, r in zip(rset.queries, rset.relevant, strict=True)}
    assert by_query == {"Alpha section": f"{pdf}#1", "Beta section": f"{pdf}#2", "Gamma section": f"{pdf}#3"}
    assert all(isinstance(s.images[0], Path) and s.images[0].is_file() for s in rset.documents)


# ------------------------------------------------------------------------------------------ modality gap


def test_modality_gap_is_zero_for_shared_embeddings_and_root_two_for_orthogonal_ones() -> None:
    pairs = [(Snippet(text=f"t{k}"), Snippet(text=f"i{k}")) for k in range(2)]
    same = ev.modality_gap(lambda s: np.ones((len(s), 3), np.float32), pairs)
    assert same["gap"] == pytest.approx(0.0, abs=1e-6) and same["alignment"] == pytest.approx(0.0, abs=1e-6)
    assert same["paired_cosine"] == pytest.approx(1.0)

    def split(snippets: Sequence[Snippet]) -> np.ndarray:
        return np.array([[1.0, 0.0] if s.text.startswith("t") else [0.0, 1.0] for s in snippets], np.float32)

    apart = ev.modality_gap(split, pairs)
    assert apart["gap"] == pytest.approx(math.sqrt(2)) and apart["alignment"] == pytest.approx(2.0)
    # 4 points: 2 pairs at squared distance 0, 4 at 2
    assert apart["uniformity"] == pytest.approx(math.log((2 + 4 * math.exp(-4)) / 6))
    assert ev.modality_gap(split, pairs[:1]) == {"pairs": 1}


# ------------------------------------------------------------------------------------ real micro model


def test_the_micro_model_retrieves_identical_renders_and_runs_every_protocol(tmp_path: Path, micro_model) -> None:
    snippets = [Snippet(text=f"passage number {k} about something else entirely " * (k + 1),
                        metadata={"eval_key": str(k)}) for k in range(6)]
    identical = ev.RetrievalSet("same", snippets, snippets[::-1], [{5 - k} for k in range(6)])
    assert ev.evaluate_set(identical, ev.dense_scorer(ev.model_encoder(micro_model)))["recall@1"] == 1.0

    docs = ev.open_documents(pair_documents(tmp_path), tmp_path / "images")
    first = ev.run_eval(docs, ev.model_encoder(micro_model), ["anycir", "seqcir", "text"], max_queries=10)
    again = ev.run_eval(docs, ev.model_encoder(micro_model), ["anycir", "seqcir", "text"], max_queries=10)
    assert first["results"] == again["results"]
    for metrics in first["results"].values():
        assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k not in ("queries", "targets"))
    assert first["modality_gap"]["pairs"] == 10 and first["modality_gap"]["gap"] > 0
    # Scored by their points as the index stores them: one a text or an image, so the same figures.
    by_points = ev.run_eval(docs, ev.model_encoder(micro_model), ["anycir", "seqcir", "text"], max_queries=10,
                            points=ev.model_points(micro_model))
    for name, metrics in first["results"].items():
        assert by_points["results"][name] == pytest.approx(metrics, abs=1e-6)


# ------------------------------------------------------------------------------------------------- CLI


def test_vc2l_eval_prints_a_table_and_writes_json(tmp_path: Path, micro_model_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pypdfium2")
    data = pair_documents(tmp_path)
    pdf = make_pdf(tmp_path / "doc.pdf", ["Alpha section", "Beta section"], True)
    out = tmp_path / "results.json"
    rc = main(["eval", str(data), "--images", str(tmp_path / "images"), "--model", str(micro_model_dir),
               "--protocol", "anycir,seqcir,csr,text", "--pdfs", str(pdf), "--max-queries", "10",
               "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "anycir:image->text+image" in printed and "csr" in printed and "modality gap" in printed
    report = json.loads(out.read_text())
    assert report["results"]["csr"]["queries"] == 2 and report["results"]["csr"]["targets"] == 2
    assert report["results"]["anycir:text->text"]["queries"] == 6
    assert set(report["results"]) >= {"seqcir", "text:heading->section"}
    assert report["modality_gap"]["pairs"] == 10  # 12 text+image segments, capped


def test_vc2l_eval_rejects_bad_arguments_with_one_line(tmp_path: Path, micro_model_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = pair_documents(tmp_path)
    assert main(["eval", str(data), "--protocol", "anycir,nope", "--model", str(micro_model_dir)]) == 1
    assert "--protocol" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.jsonl"), "--model", str(micro_model_dir)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["eval", str(data), "--model", str(tmp_path / "no-model")]) == 1
    assert "--model" in capsys.readouterr().err


def test_text_protocol_runs_on_ingested_snippets_with_their_heading_metadata(tmp_path: Path) -> None:
    from vc2l_retriever.ingest import ingest

    for k in range(3):
        (tmp_path / f"doc{k}.md").write_text(f"# Guide topic{k}\n\nThe guide explains topic{k} in a few words.\n\n"
                                             f"## Usage topic{k}\n\nCall the tool for topic{k} and read its output.\n")
    segments = ev.segments_from_snippets(ingest(tmp_path))
    rset = ev.text_set(segments)
    assert sorted(q.text for q in rset.queries) == sorted(
        [f"Guide topic{k}" for k in range(3)] + [f"Usage topic{k}" for k in range(3)])
    assert ev.evaluate_set(rset, ev.dense_scorer(topic_encoder(3)))["recall@5"] == 1.0


# ------------------------------------------------------------------------- training/evaluate.py (held-out sets)


def section_documents(path: Path, topics: Sequence[str]) -> Path:
    """One document per topic, each a heading and two long snippets, so every ``build_tasks`` text task has pairs."""
    docs = []
    for topic in topics:
        texts = [f"Configuring {topic}\nThe {topic} settings live in one file that this section explains fully.",
                 f"After the settings, restart {topic} and read its log to see that the change was taken."]
        docs.append({"text": texts, "img": [], "meta": {"headings": [f"Configuring {topic}", ""]}})
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_jsonl(path, docs)


def test_bm25_finds_the_document_sharing_the_querys_words_and_a_stop_word_query_finds_nothing() -> None:
    pytest.importorskip("bm25s")  # the bench extra
    from vc2l_retriever.training import evaluate as tev

    queries = ["kernel scheduler latency", "python decorator syntax", "postgres vacuum freeze", "the and of it"]
    documents = ["The kernel scheduler decides which task runs; latency depends on it.",
                 "A decorator in Python wraps a function; the syntax uses an at sign.",
                 "VACUUM in Postgres reclaims space, and FREEZE marks old rows.",
                 "Nothing here shares a word with any of the queries above."]
    task = tev.RetrievalTask("toy", [Snippet(text=q) for q in queries], [Snippet(text=d) for d in documents])
    image_task = tev.RetrievalTask("pictures", [Snippet(images=[Image.new("RGB", (8, 8))])], [Snippet(text="x")])
    results = tev.bm25_results([task, image_task])
    assert set(results) == {"toy"}  # BM25 reads text only
    # three exact hits; the stop-word query scores every document 0, and ties count against it: rank 4 of 4
    assert results["toy"] == {"recall@1": 0.75, "mrr@10": (3 + 1 / 4) / 4, "n": 4}


def test_a_model_that_scores_everything_alike_earns_nothing() -> None:
    from vc2l_retriever.training import evaluate as tev

    assert tev.score(np.ones((5, 3)), np.ones((5, 3))) == {"recall@1": 0.0, "mrr@10": pytest.approx(1 / 5)}
    assert tev.score(np.eye(5) * 3, np.eye(5))["recall@1"] == 1.0  # cosine: the scale of a vector is ignored


def test_heldout_sets_parse_as_label_and_path_or_as_a_bare_path_named_by_its_folder(tmp_path: Path) -> None:
    from vc2l_retriever.training import evaluate as tev

    assert tev.parse_heldout(["ood=data/ood/heldout.jsonl", "data/docs/heldout.jsonl", "x/a=b/h.jsonl"]) == {
        "ood": "data/ood/heldout.jsonl", "docs": "data/docs/heldout.jsonl", "a=b": "x/a=b/h.jsonl"}
    with pytest.raises(ValueError, match="twice"):
        tev.parse_heldout(["data/docs/heldout.jsonl", "docs=other.jsonl"])
    with pytest.raises(ValueError, match="LABEL=PATH"):
        tev.parse_heldout(["=data/ood/heldout.jsonl"])
    ood = section_documents(tmp_path / "ood" / "heldout.jsonl", ["git"])
    args = tev._parse_args(["--heldout", f"out-of-domain={ood}", "--heldout", str(ood), "--no-baseline"])
    assert args.heldout == {"out-of-domain": str(ood), "ood": str(ood)}


def test_without_heldout_both_default_sets_are_scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vc2l_retriever.training import evaluate as tev

    monkeypatch.chdir(tmp_path)
    for path in tev.DEFAULT_HELDOUT.values():
        section_documents(tmp_path / path, ["git"])
    assert tev._parse_args(["--no-baseline"]).heldout == {"in-domain": "data/docs/heldout.jsonl",
                                                          "out-of-domain": "data/ood/heldout.jsonl"}


def test_without_bm25s_the_command_leaves_bm25_out_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import importlib.util

    from vc2l_retriever.training import evaluate as tev

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bm25s" else real(name, *a))
    data = section_documents(tmp_path / "docs" / "heldout.jsonl", ["git"])
    assert tev._parse_args(["--heldout", str(data)]).bm25 is False
    assert "BM25 skipped" in caplog.text


def test_missing_heldout_files_are_a_usage_error(tmp_path: Path) -> None:
    from vc2l_retriever.training import evaluate as tev

    with pytest.raises(SystemExit):
        tev._parse_args(["--heldout", f"x={tmp_path / 'absent.jsonl'}", "--no-baseline"])


def test_task_sets_keep_their_names_apart_when_merged(tmp_path: Path) -> None:
    from vc2l_retriever.training import evaluate as tev

    paths = {"docs": str(section_documents(tmp_path / "docs" / "heldout.jsonl", ["nginx", "cron", "samba"])),
             "ood": str(section_documents(tmp_path / "ood" / "heldout.jsonl", ["git", "octave"]))}
    sets = tev.build_task_sets(paths, per_task=10, max_chars=480)
    assert {label: [(t.name, len(t.queries)) for t in tasks] for label, tasks in sets.items()} == {
        "docs": [("title->section", 3), ("next-snippet", 3)], "ood": [("title->section", 2), ("next-snippet", 2)]}
    merged = tev.merge_task_sets(sets)
    assert [t.name for t in merged] == ["docs/title->section", "docs/next-snippet", "ood/title->section",
                                        "ood/next-snippet"]
    assert merged[2].queries == sets["ood"][0].queries


def test_module_encoder_matches_the_modules_own_preprocess_and_forward(micro_model) -> None:
    import torch

    from vc2l_retriever.training import evaluate as tev

    module = micro_model[0]
    snippets = [Snippet(text="a passage of some length " * (k % 4 + 1) + str(k)) for k in range(7)]
    module.train()
    got = tev.module_encoder(module, batch_size=3)(snippets)  # sorted and batched unlike the reference
    assert module.training  # its mode is given back
    module.eval()
    with torch.no_grad():
        expected = module.forward(module.preprocess(snippets))["sentence_embedding"].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert tev.module_encoder(module)([]).shape == (0, module.get_embedding_dimension())


def test_evaluate_command_scores_each_set_with_vc2l_minilm_and_bm25(tmp_path: Path, micro_model_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("bm25s")  # the bench extra
    from vc2l_retriever.training import evaluate as tev
    from vc2l_retriever.training import teacher

    # all-MiniLM-L6-v2 stood in for by a bag of words: fast, and exact on these sets
    vocabulary = ["nginx", "cron", "samba", "git", "octave"]
    embed = lambda texts: np.array([[t.count(w) + 1e-3 for w in vocabulary] for t in texts], np.float32)  # noqa: E731
    monkeypatch.setattr(teacher, "minilm_embedder", lambda: (embed, len(vocabulary)))
    docs = section_documents(tmp_path / "docs" / "heldout.jsonl", vocabulary[:3])
    ood = section_documents(tmp_path / "ood" / "heldout.jsonl", vocabulary[3:])
    out = tmp_path / "results.json"
    assert tev.main(["--model", str(micro_model_dir), "--heldout", str(docs), "--heldout", f"out-of-domain={ood}",
                     "--queries", "10", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results) == ["docs", "out-of-domain"]
    assert set(results["out-of-domain"]) == {"vc2l", "all-MiniLM-L6-v2", "bm25"}
    assert results["out-of-domain"]["bm25"]["title->section"] == {"recall@1": 1.0, "mrr@10": 1.0, "n": 2}
    assert results["docs"]["all-MiniLM-L6-v2"]["next-snippet"]["recall@1"] == 1.0
    printed = capsys.readouterr().out
    assert "| out-of-domain | title->section | 2 |" in printed and "| docs | next-snippet | 3 |" in printed
    assert printed.count("\n") == 2 + 4


def test_csr_compare_pairs_two_saved_score_files_query_by_query(tmp_path, capsys) -> None:
    from vc2l_retriever.training import csr_compare

    base = {"ood": {"recall@1": np.array([1.0, 0.0, 0.0]), "ndcg@10": np.array([1.0, 0.5, 0.0])},
            "ood2": {"recall@1": np.array([0.0, 1.0]), "ndcg@10": np.array([0.3, 1.0])}}
    new = {name: {k: np.minimum(v + 0.25, 1.0) for k, v in m.items()} for name, m in base.items()}
    csr_compare.save_scores(str(tmp_path / "base.npz"), base)
    csr_compare.save_scores(str(tmp_path / "new.npz"), new)
    loaded = csr_compare.load_scores(str(tmp_path / "base.npz"))
    assert loaded["ood2"]["ndcg@10"].tolist() == [0.3, 1.0]
    assert csr_compare.main([str(tmp_path / "base.npz"), str(tmp_path / "new.npz")]) == 0
    out = capsys.readouterr().out
    assert "base.npz  pooled: 2.0 of 5 at rank 1, nDCG@10 0.560" in out
    # Pairs are matched query by query: three queries gain 0.25, two sit at the ceiling, none loses.
    mean = float(np.mean([0.0, 0.25, 0.25, 0.25, 0.0]))
    assert f"nDCG@10 new - base: {mean:+.4f}" in out
    low = float(out.split("interval [")[1].split(",")[0])
    assert low > 0
