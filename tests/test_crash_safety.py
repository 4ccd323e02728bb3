"""Crash-safe indexing: ``vc2l index`` killed or interrupted part-way leaves a store that the next run completes.

The runs are real ``vc2l index`` subprocesses (the CLI's ``main`` with DEBUG logging) on an embedded Qdrant Edge
folder with the micro model. Progress is read from the indexer's "wrote N points" log lines, each logged once Edge
has acknowledged the write, so each signal lands while points are being written. The reference is a clean
in-process run of the same folder.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import vc2l_retriever
from vc2l_retriever.cli import main as cli_main

pytest.importorskip("qdrant_client")
from vc2l_retriever import index as vindex  # noqa: E402
from vc2l_retriever.index import IndexInUseError, default_ingest_options, open_index  # noqa: E402
from vc2l_retriever.ingest import ingest  # noqa: E402
from vc2l_retriever.integrations.qdrant import VC2LQdrant  # noqa: E402

VC2L = Path(sys.executable).with_name("vc2l")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda sigma tau omega".split()
FILES, PARAGRAPHS, BATCH = 24, 10, 8


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 text files of 10 distinct paragraphs: about 240 snippets, enough that a run takes several batches."""
    root = tmp_path_factory.mktemp("docs")
    rng = np.random.default_rng(0)
    for i in range(FILES):
        paragraphs = [f"Document {i} paragraph {j}. " + " ".join(rng.choice(WORDS, 30)) for j in range(PARAGRAPHS)]
        (root / f"doc{i:03d}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def clean(docs: Path, micro_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Point ID -> vector of an uninterrupted in-process run."""
    model = vc2l_retriever.load(micro_model_dir, device="cpu")
    with VC2LQdrant(model, path=tmp_path_factory.mktemp("clean") / "index", batch_size=64) as store:
        store.index([docs])
        points = stored_points(store.store)
    # The IDs are a function of the files alone: ingest + point_id gives the same set without any model run.
    snippets = list(ingest([docs], default_ingest_options(model)))
    assert {vindex.point_id(s) for s in snippets} == set(points)
    return points


def stored_points(store: object) -> dict[str, np.ndarray]:
    """Every point of the store; fails on two points for the same snippet (source, page, order)."""
    out: dict[str, np.ndarray] = {}
    locators: set[tuple] = set()
    for r in store.scroll(keys=["metadata"], with_vectors=True):  # type: ignore[attr-defined]
        md = r.payload["metadata"]
        locator = (md["source"], md["page"], md["order"])
        assert locator not in locators, f"two points for {locator}"
        locators.add(locator)
        out[r.id] = np.asarray(r.vector, dtype=np.float32)
    return out


def read_points(index: Path) -> dict[str, np.ndarray]:
    with open_index(index) as store:
        return stored_points(store)


class Indexer:
    """``vc2l index`` in a subprocess; counts the points it reports written (acknowledged by the store)."""

    def __init__(self, docs: Path, index: Path, model_dir: Path) -> None:
        code = ("import logging, sys; logging.basicConfig(level=logging.DEBUG, format='%(message)s');"
                "from vc2l_retriever.cli import main; sys.exit(main(sys.argv[1:]))")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "index", str(docs), "--index", str(index), "--model", str(model_dir),
             "--batch-size", str(BATCH)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.written, self.err = 0, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            if m := re.match(r"wrote (\d+) points", line):
                self.written += int(m.group(1))
            else:
                self.err.append(line)

    def wait_for_points(self, at_least: int = 1, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.written >= at_least:
                return self.written
            if self.process.poll() is not None:
                pytest.fail(f"vc2l index exited early ({self.process.returncode}): {''.join(self.err)[-2000:]}")
            time.sleep(0.01)
        self.process.kill()
        pytest.fail("vc2l index wrote no point in time")

    def finish(self, timeout: float = 120) -> tuple[str, str]:
        out = self.process.stdout.read()  # type: ignore[union-attr]
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return out, "".join(self.err)


def test_sigkill_mid_run_then_rerun_gives_exactly_the_clean_points(docs: Path, micro_model_dir: Path,
                                                                   clean: dict[str, np.ndarray], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    index = tmp_path / "index"
    indexer = Indexer(docs, index, micro_model_dir)
    process = indexer.process
    try:
        indexer.wait_for_points(at_least=3 * BATCH)  # some files finished, one part-written
        # While it runs, a second process gets a clear "in use" error and leaves the store alone.
        with pytest.raises(IndexInUseError, match="in use by another process"):
            open_index(index)
        assert cli_main(["info", "--index", str(index)]) == 1
        assert "is in use by another process" in capsys.readouterr().err
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    indexer.finish()

    partial = read_points(index)  # Edge replays its write-ahead log on load
    assert 0 < len(partial) < len(clean), "the kill did not land mid-run"
    assert len(partial) >= indexer.written  # every acknowledged point survived the kill
    assert set(partial) <= set(clean)

    rerun = subprocess.run([str(VC2L), "index", str(docs), "--index", str(index), "--model", str(micro_model_dir),
                            "--batch-size", str(BATCH)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    final = read_points(index)
    assert set(final) == set(clean) and len(final) == len(clean)  # none missing, none duplicated
    for point_id, vector in final.items():
        np.testing.assert_allclose(vector, clean[point_id], atol=1e-6)
    assert f"{len(clean)} points in collection 'vc2l'" in rerun.stdout
    # Finished files were skipped unparsed, and of the part-written file only the missing snippets were encoded.
    assert int(re.search(r"; (\d+) files unchanged", rerun.stdout).group(1)) >= 1
    assert int(re.search(r"\((\d+) encoded", rerun.stdout).group(1)) == len(clean) - len(partial)
    print(f"SIGKILL after {len(partial)} of {len(clean)} points; after the rerun {len(final)} (expected "
          f"{len(clean)})", file=sys.stderr)


def test_ctrl_c_stops_after_the_batch_in_progress_with_a_summary(docs: Path, micro_model_dir: Path,
                                                                 clean: dict[str, np.ndarray], tmp_path: Path) -> None:
    index = tmp_path / "index"
    indexer = Indexer(docs, index, micro_model_dir)
    process = indexer.process
    try:
        indexer.wait_for_points()
        process.send_signal(signal.SIGINT)
        out_text, err_text = indexer.finish(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err_text[-2000:]
    assert "Traceback" not in err_text
    assert "stopping after the batch in progress" in err_text and "vc2l index: interrupted" in err_text
    assert out_text.startswith("indexed ") and "interrupted: stopped after the batch in progress" in out_text
    stored = read_points(index)
    assert f"{len(stored)} points in collection 'vc2l'" in out_text  # the summary matches the store
    assert 0 < len(stored) < len(clean) and set(stored) <= set(clean)

    # The next run finishes the job: files completed before the interrupt are not parsed again.
    model = vc2l_retriever.load(micro_model_dir, device="cpu")
    with VC2LQdrant(model, path=index, batch_size=64) as store:
        report = store.index([docs])
    assert not report.interrupted
    assert set(read_points(index)) == set(clean)
    assert len(report.unchanged) + report.files == FILES
    assert report.encoded == len(clean) - len(stored)  # only what the interrupted run had not written


def test_stop_callback_ends_an_api_run_at_a_batch_boundary(docs: Path, micro_model_dir: Path,
                                                           clean: dict[str, np.ndarray], tmp_path: Path) -> None:
    model = vc2l_retriever.load(micro_model_dir, device="cpu")
    with VC2LQdrant(model, path=tmp_path / "index", batch_size=BATCH) as store:
        report = store.index([docs], stop=lambda: store.count() >= 2 * BATCH)
        stored = stored_points(store.store)
    assert report.interrupted and "interrupted" in report.summary()
    # Polled after every snippet, the stop request is seen right after the second batch was written.
    assert len(stored) == report.snippets == 2 * BATCH
    assert set(stored) <= set(clean)


# --------------------------------------------------------------------------------------------------- training

try:  # the [train] extra (pyyaml) may be missing; the indexing tests above do not need it
    from vc2l_retriever.training import trainer as training
except ImportError:
    training = None
needs_training = pytest.mark.skipif(training is None, reason="needs vc2l-retriever[train]")


def write_training_corpus(folder: Path) -> Path:
    """A small text-only interleaved JSONL: 12 documents of 6 segments."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for d in range(12):
            texts = [" ".join(rng.choice(WORDS, int(rng.integers(4, 12)))).capitalize() + "." for _ in range(6)]
            f.write(json.dumps({"text": texts, "img": [[] for _ in texts], "meta": {"doc": d}}) + "\n")
    return path


def write_recipe(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def training_config(corpus: Path, run_dir: Path, total: int = 800, every: int = 24) -> dict:
    return {
        "run_dir": str(run_dir), "threads": 1, "device": "cpu", "log_every": 1, "eval_every_samples": 0,
        "checkpoint_every_samples": every, "keep_checkpoints": 2, "model": {"preset": "micro"},
        "data": {"train": str(corpus)}, "pairs": {"max_chars": 120},
        "loss": {"infonce": 1.0}, "optim": {"batch_size": 8, "total_samples": total, "warmup_samples": 16,
                                            "lr": 2e-3},
    }


def losses_by_step(run_dir: Path) -> list[tuple[int, float]]:
    """Every (step, loss) record of ``metrics.jsonl`` in the order written (eval records left out)."""
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def latest_step(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "latest.json").read_text(encoding="utf-8"))["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.fixture()
def threads_restored() -> Iterator[None]:
    """The trainer sets torch's thread count for the whole process; put it back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@needs_training
def test_training_killed_mid_run_resumes_from_its_checkpoint_on_the_same_loss_curve(
        tmp_path: Path, threads_restored: None) -> None:
    from vc2l_retriever.training.config import TrainConfig

    corpus = write_training_corpus(tmp_path / "corpus")
    training.Trainer(TrainConfig.from_dict(training_config(corpus, tmp_path / "clean"))).train()
    clean = dict(losses_by_step(tmp_path / "clean"))
    steps = 100
    assert sorted(clean) == list(range(1, steps + 1))

    recipe = write_recipe(tmp_path / "recipe.yaml", training_config(corpus, tmp_path / "run"))
    command = [str(VC2L), "train", str(recipe)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:  # kill between two checkpoints
        if latest_step(tmp_path / "run") >= 6 and len(losses_by_step(tmp_path / "run")) % 3 != 0:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    logged = len(losses_by_step(tmp_path / "run"))
    killed_at = losses_by_step(tmp_path / "run")[-1][0]
    checkpoint = latest_step(tmp_path / "run")
    assert process.returncode == -signal.SIGKILL and 6 <= checkpoint <= killed_at < steps, (checkpoint, killed_at)

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = losses_by_step(tmp_path / "run")
    # Steps after the checkpoint were logged twice (before the kill, and again after resuming): all the same.
    assert {step for step, _ in records} == set(clean)
    for step, loss in records:
        assert loss == pytest.approx(clean[step], abs=1e-6), step
    assert records[logged][0] == checkpoint + 1  # resumed right after the last checkpoint
    logged_steps = len({step for step, _ in records})
    print(f"training: SIGKILL at step {killed_at}, resumed from checkpoint step {checkpoint}; {logged_steps} of "
          f"{steps} steps logged, all equal to the uninterrupted run", file=sys.stderr)


@needs_training
def test_an_interrupted_checkpoint_write_never_replaces_the_last_good_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_restored: None) -> None:
    from vc2l_retriever.training import checkpoint as ckpt
    from vc2l_retriever.training.config import TrainConfig

    config = TrainConfig.from_dict(training_config(write_training_corpus(tmp_path / "corpus"), tmp_path / "run",
                                                   every=0))
    trainer = training.Trainer(config)
    batches = trainer.batches()
    for _ in range(2):
        trainer.train_step(next(batches))
    trainer.save()
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step(next(batches))
    folder = tmp_path / "run" / "checkpoints"
    before = sorted(p.name for p in folder.iterdir())

    def torn_write(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"\x00" * 100)  # half a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", torn_write)
    with pytest.raises(OSError, match="No space left"):
        trainer.save()
    assert sorted(p.name for p in folder.iterdir()) == before  # the torn temporary file was removed
    assert latest_step(tmp_path / "run") == 2
    monkeypatch.undo()

    # A kill between the weights and the state file: the new weights exist but latest.json was not moved.
    def killed(state: dict, path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        trainer.save()
    monkeypatch.undo()
    assert (folder / "ckpt-00000003.safetensors").is_file() and latest_step(tmp_path / "run") == 2
    (folder / ".ckpt-00000004.safetensors.tmp-99999").write_bytes(b"left by a SIGKILL")  # finally never ran

    weights, state = ckpt.load_checkpoint(tmp_path / "run")
    assert state["step"] == 2
    for key, value in good.items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0)
    again = training.Trainer(config)  # a restarted run resumes from the last complete checkpoint
    assert (again.step, again.samples) == (2, 16)


@needs_training
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_training_naming_the_step_and_batch_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, bad: float,
        threads_restored: None) -> None:
    run = tmp_path / "run"
    config = training_config(write_training_corpus(tmp_path / "corpus"), run, every=8)
    recipe = write_recipe(tmp_path / "recipe.yaml", config)
    compute = training.Trainer.compute_losses

    def poisoned(self: object, batch: dict) -> dict:
        terms = compute(self, batch)
        if self.step == 4:  # type: ignore[attr-defined]  # the fifth optimiser step blows up
            terms["loss"] = terms["loss"] * bad
        return terms

    monkeypatch.setattr(training.Trainer, "compute_losses", poisoned)
    assert cli_main(["train", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert f"non-finite loss ({bad})" in err and "at step 5 (samples 32)" in err
    assert latest_step(run) == 4  # nothing was saved after the bad step
    from vc2l_retriever.training import checkpoint as ckpt

    weights, state = ckpt.load_checkpoint(run)
    assert state["step"] == 4 and all(torch.isfinite(w).all() for w in weights.values())
    assert [step for step, _ in losses_by_step(run)] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) for _, loss in losses_by_step(run))
