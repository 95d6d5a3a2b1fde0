"""Where the MCMI centroids come from, and the paper's recipe beside kdflow's default.

Runs `prepare` and `teacher_mll` once in a scratch copy of the repository, then
`teacher_mcmi` once per variant, and prints each teacher's test accuracy and test CMI
(the unbiased figures: the MCMI checkpoint is chosen on validation):

    .venv/bin/python benchmarks/mcmi_recipes.py [--seed 0]

Variants: the default (centroids on the training split), centroids on a held-out 10% slice
of train, and the paper's recipe (λ 0.15, lr 0.05, 20 epochs) with either centroid source.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PAPER = {"mcmi": {"lambda": 0.15, "optim": {"lr": 0.05, "epochs": 20}}}
HOLDOUT = {"mcmi": {"centroid_split": "holdout"}}
VARIANTS: dict[str, dict[str, Any]] = {
    "default (train centroids)": {},
    "holdout centroids": HOLDOUT,
    "paper recipe (train centroids)": PAPER,
    "paper recipe (holdout centroids)": {"mcmi": {**PAPER["mcmi"], **HOLDOUT["mcmi"]}},
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in, section by section."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) else value
    return out


def stage(root: Path, name: str, params: Path) -> dict[str, Any]:
    """Run one stage in `root` with `params`; return the metrics file it wrote."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    subprocess.run(
        [sys.executable, "-m", f"stages.{name}", "--params", str(params)],
        cwd=root,
        env=env,
        check=True,
    )
    kind = "teacher/" + name.removeprefix("teacher_") if name.startswith("teacher") else name
    return json.loads((root / "metrics" / f"{kind}.json").read_text())


def main() -> None:
    """Print the MLL teacher's and each MCMI variant's test accuracy and CMI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="teacher seed (default: 0)")
    args = parser.parse_args()
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["teacher"]["seed"] = args.seed
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for tree in ("kdflow", "stages"):
            shutil.copytree(REPO / tree, root / tree)
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump(base))
        stage(root, "prepare", params)
        rows = [("MLL teacher", stage(root, "teacher_mll", params))]
        for label, override in VARIANTS.items():
            params.write_text(yaml.safe_dump(merged(base, override)))
            rows.append((label, stage(root, "teacher_mcmi", params)))
    print(f"\nteacher seed {args.seed}")
    print("| teacher | test acc | test CMI | kept epoch |")
    print("|---|---|---|---|")
    for label, metrics in rows:
        print(
            f"| {label} | {metrics['test_acc']:.4f} | {metrics['test_cmi']:.4f} "
            f"| {metrics['best_epoch']} |"
        )


if __name__ == "__main__":
    main()
