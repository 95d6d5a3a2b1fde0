"""dvc.yaml declares exactly what each stage reads: its params keys, code and data.

The shared tiny pipeline (tests/conftest.py) runs every stage with KDFLOW_TRACE_DIR set, so
each stage process records the params keys it read, the repository modules it imported and
the files it opened (stages/_cli.py). Here those records meet the stages' entries in the
pipeline's dvc.lock, where DVC wrote down what dvc.yaml declares for each expanded stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

# Where runs are logged, not an input of any output: no stage declares these.
UNDECLARED_PARAMS = ("tracking.",)
CODE_ROOTS = ("kdflow", "stages")
# Files a stage reads only when a param it declares says so: DVC has no conditional deps, so
# dvc.yaml declares them always. Each entry: the param and the values with which the file is
# not read, which the tiny pipeline must have.
FINETUNE_KD = ("assembly.finetune_kd", (False,))
CONDITIONAL: dict[str, dict[str, tuple[str, tuple[Any, ...]]]] = {
    kind: {"models/teacher/mll.pt": FINETUNE_KD, "kdflow/losses/kd.py": FINETUNE_KD}
    for kind in ("m2m_assemble", "m2m_e2e", "m2m_scratch")
}
CONDITIONAL["prepare"] = {"kdflow/data/cifar.py": ("data.source", ("mnist1d", "digits"))}


def _unconditional(name: str, lock: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Return the stage's locked deps less those its conditions leave unread in this run."""
    deps = [d["path"] for d in lock.get("deps", [])]
    for path, (key, unread_with) in CONDITIONAL.get(name.split("@")[0], {}).items():
        assert key in lock["params"]["params.yaml"], name
        section, field = key.split(".")
        assert params[section][field] in unread_with, f"the tiny pipeline must set {key}"
        deps.remove(path)
    return deps


def _params(tiny_pipeline: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load((tiny_pipeline["repo"] / "params.yaml").read_text())


def _covers(declared: str, key: str) -> bool:
    return key == declared or key.startswith(f"{declared}.") or declared == "*"


def _path_covers(declared: str, path: str) -> bool:
    return path == declared or path.startswith(f"{declared.rstrip('/')}/")


def _mismatches(
    name: str, what: str, declared: list[str], read: list[str], covers: Any
) -> list[str]:
    """Return one line each for what `name` reads undeclared and declares but never reads."""
    undeclared = [r for r in read if not any(covers(d, r) for d in declared)]
    unread = [d for d in declared if not any(covers(d, r) for r in read)]
    problems = []
    if undeclared:
        problems.append(f"{name} reads undeclared {what} {undeclared}")
    if unread:
        problems.append(f"{name} declares {what} it never reads {unread}")
    return problems


def _is_code(path: str) -> bool:
    return path.split("/")[0] in CODE_ROOTS


def _code_files(repo: Path, declared: str) -> set[str]:
    """Return the Python files a declared code dep (a file or a folder) stands for."""
    target = repo / declared
    if target.is_file():
        return {declared}
    return {p.relative_to(repo).as_posix() for p in target.rglob("*.py")}


@pytest.fixture(scope="module")
def stages(tiny_pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return each locked stage with the trace of the process that ran it."""
    repo: Path = tiny_pipeline["repo"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    traces = {}
    for path in tiny_pipeline["traces"].glob("*.json"):
        record = json.loads(path.read_text())
        module = path.stem.rsplit("-", 1)[0]
        traces[" ".join(["python", "-m", f"stages.{module}", *record["argv"]])] = record
    found = {}
    for name, entry in lock.items():
        assert entry["cmd"] in traces, f"{name}: no trace of `{entry['cmd']}`"
        found[name] = {"lock": entry, "trace": traces[entry["cmd"]]}
    return found


def test_every_stage_of_the_pipeline_ran_traced(stages: dict[str, dict[str, Any]]) -> None:
    kinds = {name.split("@")[0] for name in stages}
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert kinds == set(dvc_yaml)


def test_each_stage_declares_exactly_the_params_keys_it_reads(
    stages: dict[str, dict[str, Any]],
) -> None:
    problems = []
    for name, stage in stages.items():
        declared = list(stage["lock"].get("params", {}).get("params.yaml", {}))
        read = [k for k in stage["trace"]["params"] if not k.startswith(UNDECLARED_PARAMS)]
        problems += _mismatches(name, "params", declared, read, _covers)
    assert problems == [], "\n".join(problems)


def test_each_stage_declares_exactly_the_code_it_imports(
    stages: dict[str, dict[str, Any]], tiny_pipeline: dict[str, Any]
) -> None:
    repo: Path = tiny_pipeline["repo"]
    params = _params(tiny_pipeline)
    problems = []
    for name, stage in stages.items():
        deps = _unconditional(name, stage["lock"], params)
        declared = set().union(*(_code_files(repo, d) for d in deps if _is_code(d)))
        imported = {m for m in stage["trace"]["modules"] if _is_code(m)}
        if imported - declared:
            problems.append(f"{name} imports undeclared {sorted(imported - declared)}")
        if declared - imported:
            problems.append(f"{name} declares code it never imports {sorted(declared - imported)}")
    assert problems == [], "\n".join(problems)


def test_each_stage_declares_exactly_the_data_it_reads(
    stages: dict[str, dict[str, Any]], tiny_pipeline: dict[str, Any]
) -> None:
    params = _params(tiny_pipeline)
    problems = []
    for name, stage in stages.items():
        deps = [d for d in _unconditional(name, stage["lock"], params) if not _is_code(d)]
        outs = [o["path"] for o in stage["lock"].get("outs", [])]
        read = [
            path
            for path in stage["trace"]["read"]
            if not path.endswith(".py")
            and path != "params.yaml"  # declared key by key, checked above
            and not any(part.startswith(".") for part in path.split("/"))  # staging temp files
            and not path.startswith("checkpoints/")  # the stage's own resume state
            and not any(_path_covers(o, path) for o in outs)  # read back for MLflow
        ]
        problems += _mismatches(name, "data", deps, read, _path_covers)
    assert problems == [], "\n".join(problems)


def _imported_loss_files(method: str) -> subprocess.Popen[str]:
    script = (
        "import json, sys\n"
        "from kdflow.losses import METHODS\n"
        f"METHODS.get({method!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kdflow.losses.'))))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )


def test_a_student_imports_its_own_method_and_the_shared_loss_files_only() -> None:
    # dvc.yaml gives each student `kdflow/losses/${item.method}.py` plus the shared files, so
    # a method may import no other method's file; the tiny pipeline only runs kd, so every
    # method is checked here in a process of its own.
    from kdflow.losses import METHODS

    distill = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["distill"]
    shared = {d for d in distill["deps"] if d.startswith("kdflow/losses/") and "${" not in d}
    procs = {m: _imported_loss_files(m) for m in METHODS.names() if m != "none"}
    for method, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, method
        files = {f"{m.replace('.', '/')}.py" for m in json.loads(out)}
        assert files - shared == {f"kdflow/losses/{method}.py"}, method
