"""Safe loading: models load from safetensors + JSON only, pickles never run, and nothing touches the network.

A malicious pickle here makes a marker folder when unpickled (``os.mkdir``), so "it never ran" is checked by the
marker's absence, not by an exception type alone.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import vc2l_retriever
from vc2l_retriever.cli import main as cli_main
from vc2l_retriever.hub import read_paper_state_dict
from vc2l_retriever.ingest import IngestOptions, ingest


class Exploit:
    """Unpickling this runs ``os.mkdir(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"model.proj": Exploit(marker)})


@pytest.fixture()
def model_copy(micro_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(micro_model_dir, folder)
    return folder


def test_a_model_folder_whose_weights_are_a_pickle_is_refused_and_the_pickle_never_runs(
        model_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(evil_pickle(marker))
    torch.save({"model.proj": Exploit(marker)}, model_copy / "model.pt")  # torch's zip format, same payload
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        vc2l_retriever.load(model_copy)
    assert not marker.exists()


def test_a_pickle_named_model_safetensors_is_refused_and_never_runs(model_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (model_copy / "model.safetensors").write_bytes(evil_pickle(marker))
    with pytest.raises(Exception, match="(?i)header|safetensor|deserializ") as error:
        vc2l_retriever.load(model_copy)
    assert type(error.value).__name__ == "SafetensorError"
    assert not marker.exists()


def test_a_stray_pickle_beside_the_safetensors_is_ignored(model_copy: Path, micro_model_dir: Path,
                                                          tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (model_copy / "pytorch_model.bin").write_bytes(evil_pickle(marker))
    loaded = vc2l_retriever.load(model_copy, device="cpu")
    reference = vc2l_retriever.load(micro_model_dir, device="cpu")
    texts = ["stray pickles are never read", "safetensors only"]
    np.testing.assert_array_equal(loaded.encode(texts), reference.encode(texts))
    assert not marker.exists()


def test_a_model_folder_naming_its_own_code_is_refused_without_importing_it(model_copy: Path,
                                                                            tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (model_copy / "modeling_evil.py").write_text(
        f"import os\nos.mkdir({str(marker)!r})\n\nclass Evil:\n    pass\n", encoding="utf-8")
    modules = json.loads((model_copy / "modules.json").read_text(encoding="utf-8"))
    modules[0]["type"] = "modeling_evil.Evil"
    (model_copy / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    with pytest.raises(ValueError, match="trust_remote_code"):
        vc2l_retriever.load(model_copy)
    assert not marker.exists()


def test_a_paper_checkpoint_holding_an_object_is_refused_by_convert_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"visual.proj": Exploit(marker)}}, path)  # a real torch zip checkpoint
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        read_paper_state_dict(path)
    with pytest.raises(pickle.UnpicklingError):
        cli_main(["convert-checkpoint", str(path), str(tmp_path / "out")])
    assert not marker.exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------- network


class NetworkRecorder:
    """Stands in for ``socket``: records every attempt to open a socket, resolve a name or connect, and fails it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        recorder = self

        class BlockedSocket(socket.socket):
            def __init__(self, *args: object, **kwargs: object) -> None:
                recorder.attempts.append(f"socket{args}")
                raise OSError("network access blocked by the test")

        def blocked(name: str):  # noqa: ANN202
            def fail(*args: object, **kwargs: object) -> None:
                recorder.attempts.append(f"{name}{args[:2]}")
                raise socket.gaierror(f"network access blocked by the test ({name})")
            return fail

        monkeypatch.setattr(socket, "socket", BlockedSocket)
        monkeypatch.setattr(socket, "create_connection", blocked("create_connection"))
        monkeypatch.setattr(socket, "getaddrinfo", blocked("getaddrinfo"))


def page_with_remote_images(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "page.html"
    path.write_text('<h1>Offline</h1><p>remote pictures <img src="http://example.com/a.png"> '
                    '<img src="https://example.com/b.png"> <img src="//cdn.example.com/c.png"> stay remote</p>',
                    encoding="utf-8")
    return path


def test_loading_ingesting_encoding_and_indexing_never_touch_the_network(
        micro_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("selectolax")
    pytest_socket = pytest.importorskip("pytest_socket")
    net = NetworkRecorder(monkeypatch)
    pytest_socket.disable_socket()  # belt and braces: pytest-socket raises on any socket the recorder misses
    try:
        page = page_with_remote_images(tmp_path / "site")
        model = vc2l_retriever.load(micro_model_dir, device="cpu")
        (snippet,) = list(ingest([page.parent]))
        vectors = model.encode([snippet, "a query", {"text": "t", "image": None}])
        try:
            from vc2l_retriever.integrations.qdrant import VC2LQdrant
        except ImportError:
            VC2LQdrant = None  # noqa: N806
        if VC2LQdrant is not None:
            with VC2LQdrant(model, path=tmp_path / "index") as store:
                report = store.index([page.parent])
                hits = store.search("remote pictures", limit=1)
            assert report.snippets == 1 and hits[0].source == str(page)
    finally:
        pytest_socket.enable_socket()
    assert net.attempts == []
    assert snippet.metadata["remote_images_skipped"] == 3 and snippet.images == []
    assert vectors.shape == (3, model.get_embedding_dimension())


def test_remote_images_are_fetched_only_when_the_caller_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    pytest.importorskip("selectolax")
    net = NetworkRecorder(monkeypatch)
    page = page_with_remote_images(tmp_path / "site")
    (snippet,) = list(ingest([page], IngestOptions(fetch_remote=True, remote_timeout=1.0)))
    # The recorder proves it sees attempts: asked to fetch, ingestion tried all three and counted the failures.
    assert len(net.attempts) == 3 and all("example.com" in a for a in net.attempts), net.attempts
    assert snippet.metadata["remote_images_skipped"] == 3 and snippet.images == []
