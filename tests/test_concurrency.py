"""Concurrency: searches from several threads while another thread indexes into the same client.

The query is the exact text of one stored snippet, so with any model its own point is the top hit (cosine 1.0);
the files indexed meanwhile hold other texts, so the top hit must never change, and counts may only grow.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import vc2l_retriever

pytest.importorskip("qdrant_client")
from vc2l_retriever.index import default_ingest_options  # noqa: E402
from vc2l_retriever.ingest import ingest_file  # noqa: E402
from vc2l_retriever.integrations.qdrant import VC2LQdrant  # noqa: E402

ANCHOR = "the lighthouse keeper counts seventeen ships before dawn"
SEARCHERS, NEW_FILES, ROUNDS_AFTER = 4, 40, 3


def write_docs(folder: Path, prefix: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i:03d}.txt"
        path.write_text(f"{prefix} file {i} first paragraph about item {i * 7}\n\n"
                        f"{prefix} file {i} second paragraph number {i * 13}", encoding="utf-8")
        paths.append(path)
    return paths


@pytest.mark.parametrize("where", ["folder", "memory"])
def test_searches_from_many_threads_while_one_thread_indexes_stay_consistent(
        micro_model: vc2l_retriever.VC2LSentenceTransformer, tmp_path: Path, where: str) -> None:
    base = tmp_path / "base"
    write_docs(base, "base", 4)
    (base / "anchor.txt").write_text(ANCHOR, encoding="utf-8")
    new = write_docs(tmp_path / "new", "new", NEW_FILES)
    path = tmp_path / "index" if where == "folder" else ":memory:"
    with VC2LQdrant(micro_model, path=path, batch_size=4) as store:
        store.index([base])
        start_count = store.count()
        (anchor,) = store.search(ANCHOR, limit=1)
        assert anchor.text == ANCHOR and anchor.score == pytest.approx(1.0, abs=1e-5)

        errors: list[BaseException] = []
        tops: list[str] = []
        counts: dict[int, list[int]] = {i: [] for i in range(SEARCHERS)}
        done = threading.Event()

        def indexer() -> None:
            try:
                for file in new:  # one call per file: many small writes interleave with the searches
                    store.index([file])
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)
            finally:
                done.set()

        def searcher(k: int) -> None:
            try:
                extra = 0
                while extra < ROUNDS_AFTER:  # keep going a little after the indexer finished
                    extra += done.is_set()
                    hits = store.search(ANCHOR, limit=3)
                    tops.append(hits[0].id)
                    counts[k].append(store.count())
                    store.search_groups("file paragraph", limit=2, group_size=2)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=indexer)] + [threading.Thread(target=searcher, args=(k,))
                                                         for k in range(SEARCHERS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a thread hung"
        elapsed = time.perf_counter() - start
        final = store.count()

    assert errors == [], errors
    assert len(tops) >= SEARCHERS * ROUNDS_AFTER and set(tops) == {anchor.id}
    for k, seen in counts.items():
        assert seen == sorted(seen), f"searcher {k} saw the count shrink: {seen}"
        assert start_count <= seen[0] and seen[-1] == final
    per_file = len(ingest_file(new[0], default_ingest_options(micro_model)))
    assert final == start_count + per_file * NEW_FILES
    assert elapsed < 120
