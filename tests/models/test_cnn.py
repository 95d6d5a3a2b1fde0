"""cnn3: the small default student on MNIST-1D."""

from __future__ import annotations

from kdflow.models import build_model


def test_cnn3_is_about_8k_parameters_on_mnist1d() -> None:
    model = build_model("cnn3", (1, 40), 10)
    assert 5_000 <= sum(p.numel() for p in model.parameters()) <= 12_000


def test_cnn3_is_one_dimensional_for_signals() -> None:
    model = build_model("cnn3", (1, 40), 10)
    assert [type(stage[0][0]).__name__ for stage in model.stages] == ["Conv1d"] * 3
