"""Security rules read off the source: loopback servers, weights-only loads, no shell commands.

Each rule walks the AST of kdflow/, stages/ and flows/ (servers: tests/ too), resolving import
aliases, so a rename like `from subprocess import run as sh` is still caught.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdflow.audit.checks import stage_command

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("kdflow", "stages", "flows")
LOOPBACK = "127.0.0.1"
SUBPROCESS_CALLS = {
    f"subprocess.{name}" for name in ("run", "Popen", "call", "check_call", "check_output")
}
SHELL_CALLS = {"os.system", "os.popen", "os.execl", "os.execlp", "os.spawnl", "pty.spawn"}
# Loaders that construct arbitrary objects from a file. The only unpickler allowed is CIFAR's
# RestrictedUnpickler, which admits an allow-list of numpy types.
UNSAFE_LOADS = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "marshal.load",
    "marshal.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "pandas.read_pickle",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
    "shelve.open",
}


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Return local name → dotted origin for every import in a module."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str:
    """Return the dotted name an expression refers to (`sp.run` → `subprocess.run`), or ""."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _calls(*packages: str) -> Iterator[tuple[str, str, ast.Call]]:
    """Yield (file:line, dotted callee, call) for every call in the packages' sources."""
    for path in _sources(*packages):
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                yield where, _dotted(node.func, aliases), node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_torch_load_is_weights_only() -> None:
    loads = [(where, call) for where, name, call in _calls(*PACKAGES) if name == "torch.load"]

    assert loads, "no torch.load found: the rule checks nothing"
    for where, call in loads:
        flag = _keyword(call, "weights_only")
        assert isinstance(flag, ast.Constant) and flag.value is True, where


def _safe_yaml_loaders(path: Path) -> set[str]:
    """Return the names of the classes in `path` that derive from yaml.SafeLoader."""
    tree = ast.parse(path.read_text())
    aliases = _aliases(tree)
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(_dotted(base, aliases) == "yaml.SafeLoader" for base in node.bases)
    }


def _is_safe_yaml_load(where: str, name: str, call: ast.Call) -> bool:
    """Return whether a `yaml.load` call passes a SafeLoader subclass of its own module."""
    loader = _keyword(call, "Loader")
    if name != "yaml.load" or not isinstance(loader, ast.Name):
        return False
    return loader.id in _safe_yaml_loaders(REPO / where.rsplit(":", 1)[0])


def test_nothing_unpickles_outside_the_restricted_unpickler() -> None:
    unsafe = [
        f"{where} {name}"
        for where, name, call in _calls(*PACKAGES)
        if name in UNSAFE_LOADS and not _is_safe_yaml_load(where, name, call)
    ]
    numpy_pickles = [
        where
        for where, name, call in _calls(*PACKAGES)
        if name in ("numpy.load", "np.load")
        and not (
            isinstance(flag := _keyword(call, "allow_pickle"), ast.Constant) and flag.value is False
        )
        and _keyword(call, "allow_pickle") is not None
    ]

    assert unsafe == []
    assert numpy_pickles == []
    # Only a SafeLoader subclass passes: yaml's full Loader, or none, constructs objects.
    for text in ("yaml.load(s, Loader=yaml.Loader)", "yaml.load(s)", "yaml.load(s, Loader=X)"):
        call = ast.parse(text).body[0].value  # type: ignore[attr-defined]
        assert not _is_safe_yaml_load("kdflow/config.py:1", "yaml.load", call), text
    # The one Unpickler subclass narrows find_class to its allow-list.
    cifar = ast.parse((REPO / "kdflow" / "data" / "cifar.py").read_text())
    (unpickler,) = [
        node
        for node in ast.walk(cifar)
        if isinstance(node, ast.ClassDef)
        and any(_dotted(base, _aliases(cifar)) == "pickle.Unpickler" for base in node.bases)
    ]
    methods = {n.name: n for n in unpickler.body if isinstance(n, ast.FunctionDef)}
    assert "find_class" in methods
    assert "_ALLOWED_GLOBALS" in ast.unparse(methods["find_class"])


def test_no_shell_and_no_command_strings() -> None:
    problems = []
    for where, name, call in _calls(*PACKAGES):
        if name in SHELL_CALLS or name.startswith(("os.exec", "os.spawn")):
            problems.append(f"{where} {name}")
        if name not in SUBPROCESS_CALLS:
            continue
        shell = _keyword(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            problems.append(f"{where} {name}(shell=…)")
        command = call.args[0] if call.args else _keyword(call, "args")
        # A list of arguments reaches the program as is; a string would need a shell to split.
        if command is None or isinstance(command, ast.Constant | ast.JoinedStr | ast.BinOp):
            problems.append(f"{where} {name} with a command string")
        elif isinstance(command, ast.Call) and _dotted(command.func, {}).endswith(
            ("join", "format")
        ):
            problems.append(f"{where} {name} with a command built by {ast.unparse(command)}")

    assert problems == []


def _host_arguments(tree: ast.Module) -> Iterator[tuple[int, ast.expr | None]]:
    """Yield (line, host) for each `--host H` in a list literal and each `host=` keyword."""
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple):
            items = node.elts
            for i, item in enumerate(items):
                if isinstance(item, ast.Constant) and item.value == "--host":
                    yield node.lineno, items[i + 1] if i + 1 < len(items) else None
        elif isinstance(node, ast.Call):
            host = _keyword(node, "host")
            if host is not None:
                yield node.lineno, host


def _bind_addresses(tree: ast.Module) -> Iterator[tuple[int, ast.expr]]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "bind"
            and node.args
            and isinstance(node.args[0], ast.Tuple)
        ):
            yield node.lineno, node.args[0].elts[0]


def test_servers_started_by_kdflow_and_its_tests_bind_to_loopback() -> None:
    found, problems = 0, []
    for path in _sources(*PACKAGES, "tests"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, host in [*_host_arguments(tree), *_bind_addresses(tree)]:
            found += 1
            if not (isinstance(host, ast.Constant) and host.value == LOOPBACK):
                problems.append(f"{path.relative_to(REPO)}:{line}")
        # Every server command names its host: the default may change with a tool's version.
        for node in ast.walk(tree):
            words = [e.value for e in getattr(node, "elts", []) if isinstance(e, ast.Constant)]
            if isinstance(node, ast.List) and "server" in words and "--host" not in words:
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} server without --host")

    assert found >= 4, "the rule found no server: it checks nothing"
    assert problems == []


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "python -m stages.prepare; touch pwned",
        "python -c 'import os'",
        "python -m 'stages.prepare",  # an unclosed quote
        ["python", "-m", "stages.prepare"],  # DVC's list form: not what kdflow writes
    ],
)
def test_audit_reruns_only_stage_commands(command: object) -> None:
    assert stage_command(command) is None


def test_audit_runs_a_stage_command_as_an_argument_list() -> None:
    assert stage_command("python -m stages.distill --teacher mll --seed 0") == [
        "python",
        "-m",
        "stages.distill",
        "--teacher",
        "mll",
        "--seed",
        "0",
    ]
