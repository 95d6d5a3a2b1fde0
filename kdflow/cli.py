"""The `kdflow` command: `audit` checks that the pipeline's numbers can be trusted; `preset`
turns a paper preset into `dvc exp run` parameter overrides; `readme` copies the report's
results into README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="kdflow: reproducible knowledge distillation.", no_args_is_help=True, rich_markup_mode=None
)


@app.callback()
def main() -> None:
    """kdflow command-line tools."""


@app.command()
def audit(
    rerun: Annotated[
        list[str] | None,
        typer.Option(
            "--rerun",
            metavar="STAGE",
            help="stage to re-execute from its locked inputs and compare (repeatable)",
        ),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            metavar="FLOAT", help="allowed metric difference for --rerun (0: bit-identical)"
        ),
    ] = 0.0,
    root: Annotated[Path, typer.Option(metavar="DIR", help="repository root")] = Path("."),
    output: Annotated[
        Path, typer.Option(metavar="FILE", help="where to write the JSON verdict")
    ] = Path("reports/audit.json"),
    params: Annotated[Path, typer.Option(metavar="FILE", help="params file")] = Path("params.yaml"),
) -> None:
    """Check dvc.lock against the workspace, MLflow lineage of every reported figure, reruns."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from kdflow.audit.checks import check_dvc_status, check_lineage, environment, rerun_stage
    from kdflow.config import load_params
    from kdflow.errors import KdflowError
    from kdflow.io import write_json
    from kdflow.tracking import resolve_uri

    console = Console()
    try:
        settings = load_params(root / params)
    except KdflowError as exc:
        console.print(f"kdflow audit: error: {exc}")
        raise typer.Exit(2) from None
    results = [check_dvc_status(root)]
    if (root / "metrics/eval.json").is_file():
        results.append(check_lineage(root, resolve_uri(settings.tracking, root)))
    else:
        from kdflow.audit.checks import CheckResult

        results.append(
            CheckResult(
                "every reported figure has an MLflow run with lineage",
                False,
                "metrics/eval.json not found; run dvc repro first",
            )
        )
    for stage in rerun or []:
        results.append(rerun_stage(root, stage, tolerance))

    table = Table(title="kdflow audit")
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("detail", overflow="fold")
    for result in results:
        verdict = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        table.add_row(escape(result.name), verdict, escape(result.detail))
    console.print(table)
    passed = all(r.passed for r in results)
    write_json(
        root / output,
        {
            "passed": passed,
            "checks": [r.as_dict() for r in results],
            "environment": environment(),
        },
    )
    console.print(f"verdict: {'PASS' if passed else 'FAIL'} (written to {output})")
    if not passed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()


def preset_overrides(params: dict, presets: list[dict]) -> list[str]:
    """Return the `dvc exp run -S` overrides that turn `params` into params + `presets`.

    The merged result is validated first, so a bad preset fails here, not hours into a run.
    Keys new to params.yaml get Hydra's `+` prefix, which DVC's `-S` requires for them.
    """
    import copy
    import json

    from kdflow.config import parse_params

    def merge(base: dict, override: dict) -> None:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)

    def leaves(value: object, prefix: str) -> list[tuple[str, object]]:
        if isinstance(value, dict) and value:
            return [pair for k, v in value.items() for pair in leaves(v, f"{prefix}.{k}")]
        return [(prefix, value)]

    def diff(base: dict, merged: dict, prefix: str) -> list[str]:
        pairs = []
        for key, value in merged.items():
            path = f"{prefix}{key}"
            if key in base and isinstance(base[key], dict) and isinstance(value, dict):
                pairs += diff(base[key], value, f"{path}.")
            elif key not in base:
                pairs += [
                    f"+{p}={json.dumps(v, separators=(',', ':'))}" for p, v in leaves(value, path)
                ]
            elif base[key] != value:
                # Compact JSON is valid override syntax without spaces: it survives `$(...)`.
                pairs.append(f"{path}={json.dumps(value, separators=(',', ':'))}")
        return pairs

    merged = copy.deepcopy(params)
    for preset in presets:
        merge(merged, preset)
    parse_params(merged)
    return diff(params, merged, "")


@app.command()
def preset(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="preset YAML files, applied in order"),
    ],
    params: Annotated[
        Path, typer.Option(metavar="FILE", help="params file the preset applies to")
    ] = Path("params.yaml"),
) -> None:
    """Print `-S key=value` overrides for `dvc exp run $(kdflow preset FILE...)`."""
    import yaml

    from kdflow.errors import KdflowError

    try:
        base = yaml.safe_load(params.read_text()) if params.is_file() else None
        if not isinstance(base, dict):
            raise KdflowError(f"{params}: not found or not a mapping; run from the repository root")
        loaded = []
        for path in files:
            if not path.is_file():
                raise KdflowError(f"preset {path} not found; the presets live in presets/")
            data = yaml.safe_load(path.read_text())
            if not isinstance(data, dict):
                raise KdflowError(f"preset {path}: expected a mapping of params sections")
            loaded.append(data)
        pairs = preset_overrides(base, loaded)
    except (KdflowError, yaml.YAMLError) as exc:
        typer.echo(f"kdflow preset: error: {str(exc).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    for pair in pairs:
        typer.echo(f"-S {pair}")


@app.command()
def readme(
    root: Annotated[Path, typer.Option(metavar="DIR", help="repository root")] = Path("."),
) -> None:
    """Replace README.md's results block with reports/report.md's, naming the commit."""
    import subprocess

    from kdflow.errors import KdflowError
    from kdflow.readme import update_readme

    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True
    )
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "kdflow", "stages", "dvc.yaml", "dvc.lock"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    try:
        if head.returncode != 0:
            raise KdflowError(f"{root} is not a git checkout; the results must name a commit")
        if status.stdout.strip():
            raise KdflowError("the code or dvc.lock has uncommitted changes; commit them first")
        copied = update_readme(root, head.stdout.strip())
    except KdflowError as exc:
        typer.echo(f"kdflow readme: error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"README.md results from commit {head.stdout.strip()}; figures: {len(copied)}")
