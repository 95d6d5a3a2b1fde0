"""Registries: names come from the declared table, `get` imports only the name's module.

The import checks run in fresh interpreters, since this test session imports everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdflow.data import SOURCES
from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.models import MODELS
from kdflow.registry import Registry

REPO = Path(__file__).resolve().parents[1]
EVERY_REGISTRY = pytest.mark.parametrize(
    "registry", [METHODS, MODELS, SOURCES], ids=["methods", "models", "sources"]
)
OTHER_METHODS = ["at", "crd", "dkd", "dml", "fitnet", "none", "pkt", "rkd", "sp"]


def _loaded_after(code: str) -> list[str]:
    """Return the modules a fresh interpreter holds after running `code`."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def _widget_package(root: Path, name: str, modules: dict[str, str]) -> None:
    """Write package `name` under root: a widget registry and one module per file given."""
    package = root / name
    package.mkdir()
    table = {"a": f"{name}.a", "b": f"{name}.b"}
    (package / "__init__.py").write_text(
        f"from kdflow.registry import Registry\nWIDGETS = Registry('widget', modules={table!r})\n"
    )
    for module, widget in modules.items():
        (package / f"{module}.py").write_text(
            f"from {name} import WIDGETS\n\n@WIDGETS.register({widget!r})\ndef build():\n"
            f"    return {widget!r}\n"
        )


def test_names_come_from_the_table_and_get_imports_only_that_module(tmp_path, monkeypatch):
    _widget_package(tmp_path, "widgets_lazy", {"a": "a", "b": "b"})
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_lazy  # type: ignore[import-not-found]

    assert widgets_lazy.WIDGETS.names() == ["a", "b"]
    assert "b" in widgets_lazy.WIDGETS and "c" not in widgets_lazy.WIDGETS
    assert "widgets_lazy.a" not in sys.modules and "widgets_lazy.b" not in sys.modules

    assert widgets_lazy.WIDGETS.get("b")() == "b"
    assert "widgets_lazy.b" in sys.modules and "widgets_lazy.a" not in sys.modules


def test_register_refuses_a_name_the_table_does_not_declare() -> None:
    registry: Registry[object] = Registry("widget", modules={"a": __name__})

    def build() -> None: ...

    with pytest.raises(ValueError, match="widget 'c' is not in the registry table; declared: a"):
        registry.register("c")(build)
    registry.register("a")(build)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(build)


def test_register_refuses_a_name_declared_for_another_module(tmp_path, monkeypatch):
    _widget_package(tmp_path, "widgets_swapped", {"a": "b"})  # a.py registers b's name
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_swapped  # type: ignore[import-not-found]

    with pytest.raises(ValueError, match="defined in widgets_swapped.a, but the table declares"):
        widgets_swapped.WIDGETS.get("a")


def test_a_declared_module_that_registers_nothing_is_a_clear_error() -> None:
    registry: Registry[object] = Registry("widget", modules={"a": "kdflow.errors"})
    with pytest.raises(KdflowError, match="kdflow.errors does not register the widget 'a'"):
        registry.get("a")


@pytest.mark.parametrize(
    "registry", [METHODS, MODELS, SOURCES], ids=["methods", "models", "sources"]
)
def test_unknown_name_lists_the_known_ones(registry: Registry[object]) -> None:
    with pytest.raises(KdflowError) as caught:
        registry.get("bogus")
    assert str(caught.value) == (
        f"unknown {registry.kind} 'bogus'; known: {', '.join(registry.names())}"
    )


@pytest.mark.parametrize(
    "registry", [METHODS, MODELS, SOURCES], ids=["methods", "models", "sources"]
)
def test_every_declared_name_is_registered_by_its_module(registry: Registry[object]) -> None:
    registry.import_all()
    for name in registry.names():
        assert registry.get(name).__module__ == registry.modules[name]


def test_every_method_module_is_declared() -> None:
    not_methods = {"__init__", "base", "functional", "mcmi"}  # shared code, teacher objective
    files = {p.stem for p in (REPO / "kdflow" / "losses").glob("*.py")} - not_methods
    assert sorted(files) == sorted(METHODS.names())


def test_names_and_params_import_neither_torch_nor_numpy() -> None:
    loaded = _loaded_after(
        """
        import kdflow.config, kdflow.data, kdflow.losses, kdflow.models, kdflow.train.grid
        names = [*kdflow.losses.METHODS, *kdflow.models.MODELS, *kdflow.data.SOURCES]
        """
    )
    assert "torch" not in loaded and "numpy" not in loaded
    assert not [m for m in loaded if m.startswith(("kdflow.losses.", "kdflow.models."))]


def test_build_method_imports_only_that_method() -> None:
    loaded = _loaded_after(
        """
        from kdflow.losses import OutputShapes, build_method
        shapes = OutputShapes(features=[(4, 4)], embedding_dim=4, num_classes=3)
        build_method("kd", shapes, shapes, 10)
        """
    )
    assert "kdflow.losses.kd" in loaded
    assert [m for m in OTHER_METHODS if f"kdflow.losses.{m}" in loaded] == []
    assert "kdflow.losses.mcmi" not in loaded


def test_build_model_imports_the_whole_zoo() -> None:
    loaded = _loaded_after(
        """
        from kdflow.models import build_model
        build_model("cnn3", (1, 40), 10)
        """
    )
    assert set(MODELS.modules.values()) <= set(loaded)
