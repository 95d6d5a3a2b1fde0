"""The `kdflow` command: `kdflow audit` checks that the pipeline's numbers can be trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="kdflow: reproducible knowledge distillation.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """kdflow command-line tools."""


@app.command()
def audit(
    rerun: Annotated[
        list[str] | None,
        typer.Option("--rerun", help="stage to re-execute from its locked inputs and compare"),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="allowed metric difference for --rerun (0: bit-identical)")
    ] = 0.0,
    root: Annotated[Path, typer.Option(help="repository root")] = Path("."),
    output: Annotated[Path, typer.Option(help="where to write the JSON verdict")] = Path(
        "reports/audit.json"
    ),
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
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
