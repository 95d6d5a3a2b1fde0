"""Write reports/report.md (+ .html) and its PNG figures from the evaluation records."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from kdflow.report.curves import Cell
from kdflow.report.stats import PairedDifference, format_difference, paired_difference
from kdflow.report.tables import fmt, group_students, mean_std, paired_comparisons

PROTOCOL_TITLES = {"full": "full data", "fewshot": "few-shot", "zeroshot": "omitted classes"}


def _figure(
    path: Path, draw: Any, size: tuple[float, float] = (6, 3.5), panels: int | None = None
) -> str:
    """Draw into one axis, or with `panels` into a row of that many (draw gets the list)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels or 1, figsize=size, squeeze=False)
    draw(axes[0, 0] if panels is None else list(axes[0]))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" entry: the bytes stay the same across matplotlib patch releases.
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return f"![{path.stem}](figures/{path.name})"


def _teachers(records: list[dict[str, Any]], figures: Path) -> list[str]:
    teachers = {r["name"].split("/")[1]: r for r in records if r["kind"] == "teacher"}
    if not teachers:
        return ["_No teacher was trained._"]
    lines = [
        "| teacher | test acc (%) | test ECE | val CMI | test CMI |",
        "|---|---|---|---|---|",
    ]
    for name, r in teachers.items():
        lines.append(
            f"| {name.upper()} | {r['test_acc'] * 100:.2f} | {r['test_ece']:.4f} | "
            f"{r['val_cmi']:.4f} | {r['test_cmi']:.4f} |"
        )
    lines.append(
        "\nTest CMI is the unbiased figure: the MCMI checkpoint is selected on validation CMI."
    )

    def draw(ax: Any) -> None:
        names = list(teachers)
        keys = ["test_acc", "test_ece", "test_cmi"]
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ax.bar(
                [k + i * width for k in range(len(keys))],
                [teachers[name][k] for k in keys],
                width,
                label=name.upper(),
            )
        ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(keys))], keys)
        ax.set_title("Teachers: MLL vs MCMI")
        ax.legend()

    lines.append("\n" + _figure(figures / "teachers.png", draw))
    return lines


TEACHER_COLUMNS = {"none": "no teacher", "mll": "MLL teacher", "mcmi": "MCMI teacher"}
TEACHER_VERDICTS = {"higher": "MCMI higher", "lower": "MLL higher"}


def _paired_table(
    records: list[dict[str, Any]], protocol: str, what: str, key: str = "test_acc"
) -> list[str]:
    rows = paired_comparisons(records, protocol, key)
    if not rows:
        return []

    def cell(diff: PairedDifference | None) -> str:
        return format_difference(diff) if diff else "—"

    lines = [
        f"\nPaired by seed: the difference in {what} (points) with its 95% t-interval; a "
        "verdict only where the interval excludes 0:\n",
        "| method | MCMI − MLL | verdict | MLL − no teacher | MCMI − no teacher |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        diff = row["mcmi_vs_mll"]
        verdict = TEACHER_VERDICTS.get(diff.verdict, diff.verdict) if diff else "—"
        lines.append(
            f"| {row['method']} | {cell(diff)} | {verdict} | {cell(row['mll_vs_none'])} | "
            f"{cell(row['mcmi_vs_none'])} |"
        )
    return lines


def _students(records: list[dict[str, Any]], protocols: list[str]) -> list[str]:
    groups = group_students(records)
    lines = []
    for protocol in protocols:
        keys = sorted(k for k in groups if k[2] == protocol)
        if not keys:
            continue
        title = PROTOCOL_TITLES.get(protocol, protocol)
        lines.append(f"\n**{title}**: test accuracy (%), mean ± std over seeds\n")
        methods = sorted({m for (_, m, _) in keys})
        teachers = [t for t in ("none", "mll", "mcmi") if any(k[0] == t for k in keys)]
        header = [TEACHER_COLUMNS.get(t, t) for t in teachers]
        lines.append("| method | " + " | ".join(header) + " |")
        lines.append("|---" * (len(teachers) + 1) + "|")
        for method in methods:
            cells = []
            for teacher in teachers:
                values = groups.get((teacher, method, protocol))
                cells.append(fmt(*mean_std(values), len(values)) if values else "—")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += _paired_table(records, protocol, "test accuracy")
    return lines or ["_No student was trained._"]


def _fewshot(records: list[dict[str, Any]], fraction: float, figures: Path) -> list[str]:
    groups = group_students(records)
    fractions = {"fewshot": fraction, "full": 1.0}
    teachers = sorted({t for (t, _, p) in groups if p in fractions})
    if not any(p == "fewshot" for (_, _, p) in groups):
        return ["_The few-shot protocol was not run._"]

    def draw(ax: Any) -> None:
        for teacher in teachers:
            points = []
            for protocol, x in sorted(fractions.items(), key=lambda kv: kv[1]):
                values = [
                    v
                    for (t, _, p), vs in groups.items()
                    if t == teacher and p == protocol
                    for v in vs
                ]
                if values:
                    points.append((x, *mean_std(values)))
            if points:
                xs, ms, ss = zip(*points, strict=True)
                ax.errorbar(
                    xs,
                    [m * 100 for m in ms],
                    yerr=[s * 100 for s in ss],
                    marker="o",
                    label=f"{teacher.upper()} teacher" if teacher != "none" else "no teacher",
                    capsize=3,
                )
        ax.set_xscale("log")
        ax.set_xlabel("fraction of the training split")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Few-shot: accuracy vs training fraction (all methods pooled)")
        ax.legend()

    return [_figure(figures / "fewshot.png", draw)]


def _zeroshot(records: list[dict[str, Any]], class_names: list[str], figures: Path) -> list[str]:
    students = [r for r in records if r.get("protocol") == "zeroshot"]
    if not students:
        return ["_The omitted-class protocol was not run._"]
    omitted_groups = group_students(records, "omitted_acc")
    lines = [
        "Accuracy on the omitted classes' test samples (%), mean ± std over seeds; "
        "it depends strongly on the method and on the CE weight γ (docs/algorithms.md).\n",
        "| teacher | method | omitted-class acc | overall test acc |",
        "|---|---|---|---|",
    ]
    acc_groups = group_students(records)
    for (teacher, method, protocol), values in sorted(omitted_groups.items()):
        if protocol != "zeroshot":
            continue
        overall = acc_groups[(teacher, method, protocol)]
        lines.append(
            f"| {teacher} | {method} | {fmt(*mean_std(values), len(values))} | "
            f"{fmt(*mean_std(overall), len(overall))} |"
        )
    lines += _paired_table(records, "zeroshot", "omitted-class accuracy", "omitted_acc")
    best = max(
        (k for k in omitted_groups if k[2] == "zeroshot"),
        key=lambda k: mean_std(omitted_groups[k])[0],
    )
    best_records = [r for r in students if (r["teacher"], r["method"], "zeroshot") == best]
    per_class = [
        mean_std([r["per_class_acc"][c] for r in best_records])[0] for c in range(len(class_names))
    ]
    baseline = [r for r in students if r["teacher"] == "none"]
    base_per_class = (
        [mean_std([r["per_class_acc"][c] for r in baseline])[0] for c in range(len(class_names))]
        if baseline
        else None
    )
    omit = {c for r in students for c in r.get("omit", [])}

    def draw(ax: Any) -> None:
        xs = range(len(class_names))
        colors = ["tab:red" if c in omit else "tab:blue" for c in xs]
        ax.bar(
            [x - 0.2 for x in xs],
            [p * 100 for p in per_class],
            0.4,
            color=colors,
            label=f"{best[0]}-{best[1]} (best)",
        )
        if base_per_class:
            ax.bar(
                [x + 0.2 for x in xs],
                [p * 100 for p in base_per_class],
                0.4,
                color="lightgray",
                label="no teacher",
            )
        ax.set_xticks(list(xs), class_names)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Omitted classes (red): per-class accuracy")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)

    lines.append("\n" + _figure(figures / "zeroshot.png", draw, (7, 3.5)))
    return lines


def _curves(curves: dict[Cell, list[float]], protocols: list[str], figures: Path) -> list[str]:
    shown = [p for p in protocols if any(cell[2] == p for cell in curves)]
    if not shown:
        return ["_No student was trained._"]

    def draw(axes: list[Any]) -> None:
        for ax, protocol in zip(axes, shown, strict=True):
            for cell, values in curves.items():
                if cell[2] != protocol:
                    continue
                style = "--" if cell[0] == "none" else ("-" if cell[0] == "mcmi" else ":")
                label = "no teacher" if cell[0] == "none" else f"{cell[0]}-{cell[1]}"
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, [v * 100 for v in values], style, marker=".", label=label)
            ax.set_title(PROTOCOL_TITLES.get(protocol, protocol))
            ax.set_xlabel("epoch")
        axes[0].set_ylabel("validation accuracy (%)")
        axes[-1].legend(fontsize="small", loc="lower right")

    return [
        "Validation accuracy per epoch, mean over seeds (MCMI teacher solid, MLL dotted, no "
        "teacher dashed); `reports/curves.tsv` holds the same numbers for `dvc plots show`.\n",
        _figure(figures / "curves.png", draw, (4 * len(shown), 3.5), panels=len(shown)),
    ]


ASSEMBLY_PAIRS = (
    ("dma", "dma_e2e", "dma_scratch", "Deep Model Assembling"),
    ("m2m", "m2m_e2e", "m2m_scratch", "m2mKD"),
)


def _assembly(records: list[dict[str, Any]], figures: Path) -> list[str]:
    # Per-seed records `<model>-s<seed>` grouped by model.
    models: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["kind"] == "assembly":
            models.setdefault(r["name"].split("/")[1].rsplit("-s", 1)[0], []).append(r)
    pairs = [p for p in ASSEMBLY_PAIRS if all(name in models for name in p[:3])]
    if not pairs:
        return ["_No modular model was trained._"]
    lines = [
        "Each modular model beside the same architecture trained end to end with the same "
        "total number of epochs, and trained from scratch for only the fine-tune's epochs; "
        "test accuracy, mean ± std over the assembly seeds. 'before fine-tune' is the "
        "assembled model as its trained modules make it.\n",
        "| method | model | test acc (%) | before fine-tune (%) |",
        "|---|---|---|---|",
    ]

    def cell(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        return fmt(*mean_std(values), len(values)) if values else "—"

    for modular, e2e, scratch, title in pairs:
        for name, label in ((modular, "modular"), (e2e, "end to end"), (scratch, "scratch")):
            rows = models[name]
            lines.append(
                f"| {title} | {label} (`{name}`) | {cell(rows, 'test_acc')} "
                f"| {cell(rows, 'assembled_test_acc')} |"
            )

    def by_seed(name: str) -> dict[int, float]:
        return {r["seed"]: r["test_acc"] for r in models[name]}

    lines += [
        "\nPaired by assembly seed: the modular model's test accuracy minus its baselines' "
        "(points, 95% t-interval):\n",
        "| method | modular − end to end | modular − scratch |",
        "|---|---|---|",
    ]
    for modular, e2e, scratch, title in pairs:
        cells = []
        for baseline in (e2e, scratch):
            diff = paired_difference(by_seed(baseline), by_seed(modular))
            cells.append(format_difference(diff) if diff else "—")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")

    def mean_acc(name: str) -> float:
        return statistics.fmean(r["test_acc"] for r in models[name]) * 100

    def draw(ax: Any) -> None:
        xs = range(len(pairs))
        for offset, which, label in (
            (-0.27, 0, "modular"),
            (0, 1, "end to end"),
            (0.27, 2, "scratch"),
        ):
            ax.bar([x + offset for x in xs], [mean_acc(p[which]) for p in pairs], 0.27, label=label)
        ax.set_xticks(list(xs), [p[3] for p in pairs])
        ax.set_ylim(0, 105)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Modular vs end-to-end training")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)

    lines.append("\n" + _figure(figures / "assembly.png", draw))
    return lines


def build_report(
    records: list[dict[str, Any]],
    *,
    meta: dict[str, Any],
    params: dict[str, Any],
    provenance: dict[str, Any],
    figures: Path,
    curves: dict[Cell, list[float]] | None = None,
) -> str:
    """Return the report's Markdown after writing its figures into `figures`."""
    distill = params.get("distill", {})
    sorted_records = sorted(records, key=lambda r: r["name"])
    order = {"train": 0, "val": 1, "test": 2}
    rows = sorted(meta["rows"].items(), key=lambda kv: order.get(kv[0], 3))
    sections = [
        "# kdflow report",
        f"\nData: **{meta['source']}**, {meta['num_classes']} classes, input shape "
        f"{tuple(meta['input_shape'])}, rows: {', '.join(f'{n} {split}' for split, n in rows)}. "
        f"Student: `{distill.get('student')}`, "
        f"teacher: `{params.get('teacher', {}).get('model')}`. Accuracies are test accuracy of the "
        "kept epoch: for teachers the best on the validation split, for students "
        f"`distill.select: {distill.get('select', 'last')}`; test data is never selected on.",
        "\n## Teachers\n",
        *_teachers(records, figures),
        "\n## Students\n",
        *_students(records, distill.get("protocols", [])),
        "\n## Learning curves\n",
        *_curves(curves or {}, distill.get("protocols", []), figures),
        "\n## Few-shot\n",
        *_fewshot(records, distill.get("fewshot_fraction", 0.1), figures),
        "\n## Omitted classes (zero-shot)\n",
        *_zeroshot(records, meta["class_names"], figures),
        "\n## Assembly\n",
        *_assembly(records, figures),
        "\n## Provenance\n",
        f"- params hash (the keys this report reads): `{provenance['params_hash']}`",
        *[f"- data `{s}` sha256: `{h}`" for s, h in meta["hashes"].items()],
        "\nEach model's MLflow runs carry its stage in the `kdflow.stage` tag (run ids and "
        "times live in MLflow, not here).\n",
        "| model | stage |",
        "|---|---|",
        *[f"| {r['name']} | `{r.get('stage', 'unknown')}` |" for r in sorted_records],
    ]
    return "\n".join(sections) + "\n"
