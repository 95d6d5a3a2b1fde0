"""The evaluate and report stages as users reach them: a whole tiny `dvc repro`.

Every test reads the session's tiny pipeline (tests/conftest.py: 500 MNIST-1D samples, cnn3
teachers, one KD method, two protocols, one seed, 2-epoch students), run once with its MLflow
store inside its repository.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TINY_ASSEMBLY, TINY_PIPELINE, copy_pipeline, run_in_pipeline, set_params

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
TEACHERS = tuple(TINY_PIPELINE["distill"]["teachers"])
PROTOCOLS = tuple(TINY_PIPELINE["distill"]["protocols"])
SEEDS = tuple(TINY_PIPELINE["distill"]["seeds"])
ASSEMBLY_SEEDS = tuple(TINY_ASSEMBLY["seeds"])
ASSEMBLY_STAGES = {  # stage: the model it writes, once per assembly seed
    "assemble": "dma",
    "dma_e2e": "dma_e2e",
    "dma_scratch": "dma_scratch",
    "m2m_assemble": "m2m",
    "m2m_e2e": "m2m_e2e",
    "m2m_scratch": "m2m_scratch",
}
ASSEMBLED = [f"assembly/{m}-s{s}" for m in ASSEMBLY_STAGES.values() for s in ASSEMBLY_SEEDS]
STUDENTS = [
    f"distill/{teacher}-{method}-{protocol}-s{seed}"
    for teacher, method in [*((t, "kd") for t in TEACHERS), ("none", "none")]
    for protocol in PROTOCOLS
    for seed in SEEDS
]
MODELS = [f"teacher/{t}" for t in TEACHERS] + STUDENTS + ASSEMBLED


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_in_pipeline(repo, [str(VENV_BIN / "dvc"), *args])
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def pipeline(tiny_pipeline: dict[str, Any]) -> dict[str, Any]:
    """Return the session's tiny pipeline (read-only here)."""
    return tiny_pipeline


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _stage_metrics(repo: Path, name: str) -> dict[str, Any]:
    kind, stem = name.split("/")
    return _json(repo / "metrics" / kind / f"{stem}.json")


def test_repro_ran_every_stage(pipeline):
    out = pipeline["repro"].stdout
    for stage in ("prepare", "teacher_mll", "teacher_mcmi", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out, out
    for stage in ("meta", *ASSEMBLY_STAGES):
        for seed in ASSEMBLY_SEEDS:
            assert f"Running stage '{stage}@{seed}'" in out, (stage, seed)
    modules = 3 * len(ASSEMBLY_SEEDS)
    assert out.count("Running stage 'incubate@") == out.count("Running stage 'm2m@") == modules
    assert out.count("Running stage 'distill@") == len(TEACHERS) * len(PROTOCOLS) * len(SEEDS)
    assert out.count("Running stage 'baseline@") == len(PROTOCOLS) * len(SEEDS)


def test_eval_json_lists_every_model_with_checked_figures(pipeline):
    repo = pipeline["repo"]
    evaluation = _json(repo / "metrics" / "eval.json")

    assert sorted(evaluation["models"]) == sorted(MODELS)
    assert evaluation["num_models"] == len(MODELS)
    assert evaluation["validation"] == "passed"
    for name, record in evaluation["models"].items():
        assert record["name"] == name
        assert record["kind"] == name.split("/")[0]
        assert 0.0 <= record["test_acc"] <= 1.0, name
        assert 0.0 <= record["test_ece"] <= 1.0, name
        assert len(record["per_class_acc"]) == 10, name
        if name.startswith("teacher/"):
            assert record["val_cmi"] >= 0.0, name
        if "-zeroshot-" in name:
            assert record["omit"] == [9], name
            assert 0.0 <= record["omitted_acc"] <= 1.0, name
            # One omitted class: its accuracy is that class's per-class accuracy.
            assert record["omitted_acc"] == pytest.approx(record["per_class_acc"][9]), name
        else:
            assert "omitted_acc" not in record, name
    for seed in SEEDS:
        # Without a teacher nothing ever raises the omitted class's logit.
        assert evaluation["models"][f"distill/none-none-zeroshot-s{seed}"]["omitted_acc"] == 0.0


def test_evaluate_reproduces_each_stage_s_own_figures(pipeline):
    """One evaluation path: evaluate re-scores each written model to its stage's numbers."""
    repo = pipeline["repo"]
    evaluation = _json(repo / "metrics" / "eval.json")

    for name, record in evaluation["models"].items():
        stage = _stage_metrics(repo, name)
        for key in ("test_acc", "test_ece", "test_cmi", "omitted_acc"):
            if key in stage:
                assert record[key] == pytest.approx(stage[key], abs=1e-9), (name, key)
        assert record["per_class_acc"] == pytest.approx(stage["per_class_acc"], abs=1e-9), name
        for key in ("teacher", "method", "protocol", "seed"):
            if key in stage:
                assert record[key] == stage[key], (name, key)


def test_evaluation_validation_report_succeeded(pipeline):
    report = _json(pipeline["repo"] / "reports" / "validation" / "eval.json")

    assert report["success"] is True
    for suite in ("predictions", "records"):
        assert report[suite]["success"] is True, suite
        assert report[suite]["results"], suite


def test_report_has_every_section_provenance_and_stage(pipeline):
    from mlflow.tracking import MlflowClient

    repo = pipeline["repo"]
    text = (repo / "reports" / "report.md").read_text()

    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    for section in ("Teachers", "Students", "Few-shot", "Omitted classes", "Assembly"):
        assert any(h.startswith(section) for h in headings), (section, headings)
    assert headings[-1] == "Provenance"
    provenance = text.split("## Provenance", 1)[1]
    # Nothing that differs between identical runs: no commit, run id or training time.
    assert pipeline["commit"] not in text
    assert not re.search(r"[0-9a-f]{32}", text.replace(provenance, "")), "a run id in the report"
    assert "train time" not in text and "seconds" not in text
    store = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = store.get_experiment_by_name("kdflow")
    assert experiment is not None
    runs = store.search_runs([experiment.experiment_id])
    for run in runs:
        assert run.info.run_id not in text
        assert run.info.status == "FINISHED", run.data.tags["kdflow.stage"]
        assert run.data.tags["kdflow.git_commit"] == pipeline["commit"]
    # Every model is listed with the stage whose MLflow run (kdflow.stage tag) trained it.
    tagged = {r.data.tags["kdflow.stage"] for r in runs}
    for name in MODELS:
        stage = _stage_metrics(repo, name)["stage"]
        assert f"| {name} | `{stage}` |" in provenance, name
        assert stage in tagged, name
    # The data hashes of the report are the prepared data's.
    meta = _json(repo / "data" / "prepared" / "meta.json")
    for split, digest in meta["hashes"].items():
        assert f"data `{split}` sha256: `{digest}`" in provenance
    # Both teachers and every student group are in the tables.
    assert "| MLL |" in text and "| MCMI |" in text
    assert "| kd |" in text and "| none |" in text
    # Each modular model and its baselines, with eval.json's accuracy (one assembly seed).
    models = _json(repo / "metrics" / "eval.json")["models"]
    for name in ASSEMBLY_STAGES.values():
        record = models[f"assembly/{name}-s{ASSEMBLY_SEEDS[0]}"]
        # The assembled models carry their accuracy before the fine-tune from their stage.
        stage = _stage_metrics(repo, f"assembly/{name}-s{ASSEMBLY_SEEDS[0]}")
        assert record.get("assembled_test_acc") == stage.get("assembled_test_acc"), name
        acc = record.get("assembled_test_acc")
        before = "—" if acc is None else f"{acc * 100:.2f}"
        assert ("assembled_test_acc" in record) == (name in ("dma", "m2m")), name
        assert f"(`{name}`) | {record['test_acc'] * 100:.2f} | {before} |" in text, name


def test_summary_holds_the_headline_numbers_under_stable_keys(pipeline):
    repo = pipeline["repo"]
    summary = _json(repo / "metrics" / "summary.json")
    models = _json(repo / "metrics" / "eval.json")["models"]

    cells = {
        f"{t}-{m}-{p}"
        for t, m in [*((t, "kd") for t in TEACHERS), ("none", "none")]
        for p in PROTOCOLS
    }
    expected = {f"teacher.{t}.{k}" for t in TEACHERS for k in ("test_acc", "test_cmi")}
    expected |= {f"student.{c}.{k}" for c in cells for k in ("acc_mean", "acc_std", "n")}
    expected |= {f"assembly.{a.split('/')[1]}.test_acc" for a in ASSEMBLED}
    assert set(summary) == expected
    assert summary["teacher.mll.test_acc"] == round(models["teacher/mll"]["test_acc"], 4)
    cell = "student.mll-kd-full.acc_mean"
    assert summary[cell] == round(models["distill/mll-kd-full-s0"]["test_acc"], 4)
    assert summary["student.mll-kd-full.n"] == len(SEEDS)
    assert all(isinstance(v, int | float) for v in summary.values())


def test_evaluate_and_report_rerun_to_the_same_bytes_and_follow_the_grid(pipeline, tmp_path):
    repo = copy_pipeline(pipeline["repo"], tmp_path)
    outputs = [
        "metrics/eval.json",
        "metrics/summary.json",
        "reports/validation/eval.json",
        "reports/report.md",
        "reports/report.html",
        *(str(p.relative_to(repo)) for p in sorted((repo / "reports/figures").iterdir())),
    ]
    before = {rel: (repo / rel).read_bytes() for rel in outputs}
    (repo / "metrics" / "eval.json").unlink()  # the rerun must write it anew

    for stage in ("evaluate", "report"):
        done = run_in_pipeline(repo, [sys.executable, "-m", f"stages.{stage}"])
        assert done.returncode == 0, done.stderr

    assert {rel: (repo / rel).read_bytes() for rel in outputs} == before
    # Drop a protocol from the grid: its model files stay on disk, yet no row remains.
    set_params(repo, {"distill": {"protocols": ["full"]}})
    for stage in ("evaluate", "report"):
        done = run_in_pipeline(repo, [sys.executable, "-m", f"stages.{stage}"])
        assert done.returncode == 0, done.stderr
    assert (repo / "models" / "distill" / "mll-kd-zeroshot-s0.pt").is_file()
    evaluated = _json(repo / "metrics" / "eval.json")["models"]
    assert sorted(evaluated) == sorted(m for m in MODELS if "-zeroshot-" not in m)
    assert "zeroshot" not in (repo / "reports" / "report.md").read_text()
    assert not any("zeroshot" in key for key in _json(repo / "metrics" / "summary.json"))


def test_report_figures_exist_as_png(pipeline):
    reports = pipeline["repo"] / "reports"
    text = (reports / "report.md").read_text()

    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)

    assert "figures/teachers.png" in figures and "figures/zeroshot.png" in figures
    assert "figures/assembly.png" in figures
    for figure in figures:
        path = reports / figure
        assert path.is_file(), figure
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    # The few-shot protocol was not in the grid: the report says so instead of plotting.
    assert "_The few-shot protocol was not run._" in text


def test_report_html_renders_the_markdown(pipeline):
    html = (pipeline["repo"] / "reports" / "report.html").read_text()

    assert html.startswith("<!doctype html>")
    assert "<h2>Provenance</h2>" in html
    assert "<table>" in html
    assert "assembly/dma-s0" in html


def test_the_pipeline_is_up_to_date_and_a_second_repro_runs_nothing(pipeline):
    repo = pipeline["repo"]
    watched = [repo / "metrics" / "eval.json", repo / "reports" / "report.md"]
    before = {p: p.stat().st_mtime_ns for p in watched}

    assert json.loads(_dvc(repo, "status", "--json").stdout or "{}") == {}
    second = _dvc(repo, "repro")

    assert "Running stage" not in second.stdout, second.stdout
    assert "Stage 'report' didn't change, skipping" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_the_top_level_plots_overlay_the_students_curves_and_show_every_figure(pipeline):
    repo = pipeline["repo"]
    curves = (repo / "reports" / "curves.tsv").read_text().splitlines()
    assert curves[0] == "epoch\tval_acc\tseries"
    epochs = TINY_PIPELINE["distill"]["optim"]["epochs"]
    cells = {f"{t}-kd-{p}" for t in TEACHERS for p in PROTOCOLS}
    cells |= {f"no teacher-{p}" for p in PROTOCOLS}
    assert len(curves) == 1 + epochs * len(cells)
    # One seed: each cell's curve is its student's own per-epoch table.
    kd = [line.split("\t") for line in curves[1:] if line.endswith("\tmll-kd-full")]
    table = (repo / "plots" / "distill" / "mll-kd-full-s0.tsv").read_text().splitlines()
    column = table[0].split("\t").index("val_acc")
    assert [float(v) for _, v, _ in kd] == [float(r.split("\t")[column]) for r in table[1:]]

    shown = json.loads(_dvc(repo, "plots", "show", "--json").stdout)

    assert not shown.get("errors"), shown["errors"]
    (curve,) = shown["data"]["student validation curves"]
    values = curve["content"]["data"]["values"]
    assert {v["series"] for v in values} == cells
    assert curve["content"]["encoding"]["color"]["field"] == "series"
    figures = {p.name for p in (repo / "reports" / "figures").iterdir()}
    assert {k.split("/")[-1] for k in shown["data"] if k.endswith(".png")} == figures
