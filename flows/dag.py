"""The DVC pipeline as a plain DAG: stage addresses and their direct upstream stages.

The DAG is read through DVC's own index (`dvc.repo.Repo(root).index.graph`), the structure
`dvc repro` plans from: `foreach`/`matrix` expansions arrive as separate stages addressed the
way `dvc repro` accepts them (`distill@mll-kd-full-0`, `sub/dvc.yaml:stage`), `${...}` values
are interpolated from params.yaml, and an edge exists exactly where DVC sees an output of one
stage used as a dependency of another. Parsing `dvc dag --dot` text would give the same edges
through a rendering format that is neither documented as stable nor carries nested paths
unambiguously; every DVC call is kept in `read_dag` so an API move is one place to fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kdflow.errors import KdflowError

Dag = dict[str, tuple[str, ...]]  # stage address -> direct upstream addresses; keys topological


def read_dag(root: Path) -> Dag:
    """Return the pipeline stages of the DVC project at `root`, in topological order."""
    from dvc.exceptions import DvcException
    from dvc.stage import PipelineStage

    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            graph = repo.index.graph  # edges point from a stage to the stages it depends on
            nodes = list(graph.nodes)
            upstream_of = {node: list(graph.successors(node)) for node in nodes}
    except DvcException as exc:
        raise KdflowError(f"cannot read the DVC pipeline in {root}: {exc}") from None

    # `.dvc` files (data tracked with `dvc add`/`dvc import`) are inputs, not stages to run;
    # look through them so a stage still waits for any pipeline stage behind them.
    def pipeline_upstream(node: object, seen: set[int]) -> list[str]:
        found: list[str] = []
        for dep in upstream_of[node]:
            if id(dep) in seen:
                continue
            seen.add(id(dep))
            if isinstance(dep, PipelineStage):
                found.append(_address(dep))
            else:
                found.extend(pipeline_upstream(dep, seen))
        return found

    edges = {
        _address(node): tuple(dict.fromkeys(pipeline_upstream(node, set())))
        for node in nodes
        if isinstance(node, PipelineStage)
    }
    return topological(edges)


def _address(stage: Any) -> str:
    # DVC's own `addressing` is relative to the process's cwd; commands run at the root.
    if stage.path_in_repo == "dvc.yaml":
        return stage.name
    return f"{stage.path_in_repo}:{stage.name}"


def topological(edges: Mapping[str, Iterable[str]]) -> Dag:
    """Return `edges` reordered so every stage follows its upstream (stable otherwise)."""
    ordered: Dag = {}
    visiting: set[str] = set()

    def visit(stage: str) -> None:
        if stage in ordered:
            return
        if stage in visiting:
            raise KdflowError(f"the DVC pipeline has a cycle through stage '{stage}'")
        visiting.add(stage)
        ups = tuple(edges[stage])
        for up in ups:
            visit(up)
        visiting.discard(stage)
        ordered[stage] = ups

    for stage in edges:
        visit(stage)
    return ordered


def select(dag: Dag, targets: Iterable[str] | None) -> Dag:
    """Return the sub-DAG `dvc repro TARGETS` would run: the targets and all their upstream.

    A target is a stage address or the name of a `foreach`/`matrix` group (`distill` selects
    every `distill@…`); no targets select the whole pipeline.
    """
    targets = list(targets or [])
    if not targets:
        return dict(dag)
    wanted: set[str] = set()
    for target in targets:
        matches = [s for s in dag if s == target or s.startswith(f"{target}@")]
        if not matches:
            close = difflib.get_close_matches(target, list(dag), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KdflowError(f"unknown stage '{target}' in dvc.yaml{hint}")
        wanted.update(matches)
    stack = list(wanted)
    while stack:
        for up in dag[stack.pop()]:
            if up not in wanted:
                wanted.add(up)
                stack.append(up)
    return {stage: ups for stage, ups in dag.items() if stage in wanted}


def descendants(dag: Dag, stage: str) -> list[str]:
    """Return every stage downstream of `stage`, in topological order."""
    below: set[str] = {stage}
    for candidate, ups in dag.items():  # keys are topological, so one pass suffices
        if any(up in below for up in ups):
            below.add(candidate)
    return [s for s in dag if s in below and s != stage]


def ancestors(dag: Dag, stage: str) -> list[str]:
    """Return every stage upstream of `stage`, in topological order."""
    above: set[str] = set()
    stack = [stage]
    while stack:
        for up in dag[stack.pop()]:
            if up not in above:
                above.add(up)
                stack.append(up)
    return [s for s in dag if s in above]
