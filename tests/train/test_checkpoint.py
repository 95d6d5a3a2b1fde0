"""Model files: a faithful round trip, metadata checks, and refusal of anything but weights."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.models import build_model
from kdflow.train.checkpoint import load_model, save_model

INPUT_SHAPE = (1, 40)
META = {"arch": "cnn3", "input_shape": [1, 40], "num_classes": 10, "data_hash": "abc-def-123"}


class Payload:
    """An arbitrary object whose unpickling runs code: it creates the folder it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def trained_file(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    """Return (model file, the model saved in it, a batch of inputs)."""
    torch.manual_seed(0)
    model = build_model("cnn3", INPUT_SHAPE, 10)
    inputs = torch.randn(16, *INPUT_SHAPE)
    model.train()
    model(inputs)  # moves the BatchNorm running statistics away from their initial values
    model.eval()
    path = tmp_path / "models" / "teacher.pt"
    save_model(path, model, META)
    return path, model, inputs


def test_the_same_weights_give_the_same_bytes_whatever_the_temp_name(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model("cnn3", INPUT_SHAPE, 10)
    names = iter(["aaaa", "zzzzzzzz"])
    real_mkstemp = tempfile.mkstemp

    def mkstemp(prefix: str = "", suffix: str = "", dir: str | None = None) -> tuple[int, str]:
        # Two different temp names, as two runs get: torch.save to a path would put each
        # name into the archive.
        return real_mkstemp(prefix=prefix + next(names), suffix=suffix, dir=dir)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    save_model(tmp_path / "a" / "m.pt", model, META)
    save_model(tmp_path / "b" / "m.pt", model, META)

    first, second = (tmp_path / d / "m.pt" for d in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()
    assert {n.split("/")[0] for n in zipfile.ZipFile(first).namelist()} == {"archive"}


def test_round_trip_gives_identical_logits(trained_file):
    path, model, inputs = trained_file

    loaded, meta = load_model(path, expect={"data_hash": META["data_hash"], "num_classes": 10})

    assert meta == META
    assert type(loaded) is type(model)
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))


def test_data_hash_mismatch_names_the_key(trained_file):
    path, _, _ = trained_file

    with pytest.raises(KdflowError, match=r"data_hash='abc-def-123'.*data_hash='other'"):
        load_model(path, expect={"data_hash": "other"})


def test_truncated_model_file_is_a_kdflow_error(trained_file):
    path, _, _ = trained_file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(KdflowError, match="is not a readable kdflow model file"):
        load_model(path)


def test_missing_model_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(KdflowError, match="not found; run the stage that trains it"):
        load_model(tmp_path / "absent.pt")


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    model = build_model("cnn3", INPUT_SHAPE, 10)
    torch.save({"meta": META, "state_dict": model.state_dict(), "x": Payload(marker)}, path)

    with pytest.raises(KdflowError, match="is not a readable kdflow model file"):
        load_model(path)
    assert not marker.exists()

    # The payload is live: a full unpickle runs it, which is what weights_only prevents.
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_metadata_must_be_complete(tmp_path):
    model = build_model("cnn3", INPUT_SHAPE, 10)

    with pytest.raises(ValueError, match="data_hash"):
        save_model(tmp_path / "m.pt", model, {k: v for k, v in META.items() if k != "data_hash"})
    assert not (tmp_path / "m.pt").exists()
