"""The flow's building blocks without Prefect: the DAG read from DVC, scratch workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from dvc.config import Config

from flows.dag import ancestors, descendants, read_dag, select, topological
from flows.workspace import (
    FLOW_REMOTE_NAME,
    Remote,
    error_line,
    make_workspace,
    ran_stages,
    resolve_remote,
    restored_stages,
    take_snapshot,
)
from kdflow.errors import KdflowError
from tests.flows.toy import make_toy_repo, stage
from tests.helpers import git

# pygtrie deprecations inside DVC's own graph code, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")

TOY = {
    "a": stage("a"),
    "b": {
        "foreach": ["x", "y"],
        "do": {
            "cmd": "python step.py b@${item} out/b-${item}.txt out/a.txt",
            "deps": ["step.py", "out/a.txt", "raw.txt"],
            "outs": ["out/b-${item}.txt"],
        },
    },
    "c": {
        "cmd": "python step.py c out/c.txt out/b-x.txt out/b-y.txt",
        "deps": ["step.py", "out/b-x.txt", "out/b-y.txt"],
        "outs": ["out/c.txt"],
    },
    "other": stage("other", "a"),
}


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    repo = make_toy_repo(tmp_path / "repo", TOY)
    # Data added with `dvc add` is a `.dvc` file stage: an input, never a task.
    (repo / "raw.txt").write_text("raw")
    (repo / "raw.txt.dvc").write_text(
        "outs:\n- md5: 9d2b6d1bd47b3c3e1a8f5e3b6d1fa1b1\n  size: 3\n  hash: md5\n  path: raw.txt\n"
    )
    return repo


def test_dag_has_one_entry_per_expansion_in_topological_order(toy: Path):
    dag = read_dag(toy)

    assert dag == {
        "a": (),
        "b@x": ("a",),
        "b@y": ("a",),
        "c": ("b@x", "b@y"),
        "other": ("a",),
    }


def test_dag_of_a_nested_dvc_yaml_uses_root_relative_addresses(toy: Path):
    nested = toy / "sub"
    nested.mkdir()
    (nested / "dvc.yaml").write_text(
        "stages:\n  d:\n    cmd: python ../step.py d out.txt ../out/c.txt\n"
        "    deps: [../out/c.txt]\n    outs: [out.txt]\n"
    )

    assert read_dag(toy)["sub/dvc.yaml:d"] == ("c",)


def test_select_takes_targets_groups_and_their_upstream(toy: Path):
    dag = read_dag(toy)

    assert list(select(dag, None)) == list(dag)
    assert list(select(dag, ["c"])) == ["a", "b@x", "b@y", "c"]
    assert list(select(dag, ["b"])) == ["a", "b@x", "b@y"]  # a foreach group by name
    assert list(select(dag, ["b@y", "other"])) == ["a", "b@y", "other"]
    with pytest.raises(KdflowError, match=r"unknown stage 'cc' in dvc\.yaml; did you mean c\?"):
        select(dag, ["cc"])


def test_descendants_and_ancestors(toy: Path):
    dag = read_dag(toy)

    assert descendants(dag, "a") == ["b@x", "b@y", "c", "other"]
    assert descendants(dag, "b@x") == ["c"]
    assert descendants(dag, "c") == []
    assert ancestors(dag, "c") == ["a", "b@x", "b@y"]


def test_topological_orders_and_refuses_cycles():
    assert list(topological({"z": ["y"], "y": [], "x": ["z"]})) == ["y", "z", "x"]
    with pytest.raises(KdflowError, match="cycle through stage"):
        topological({"p": ["q"], "q": ["p"]})


def test_read_dag_of_a_broken_dvc_yaml_is_one_line(tmp_path: Path):
    repo = make_toy_repo(tmp_path / "repo", {"a": stage("a")})
    (repo / "dvc.yaml").write_text("stages:\n  a: [unclosed\n")

    with pytest.raises(KdflowError, match="cannot read the DVC pipeline in") as caught:
        read_dag(repo)
    assert "\n" not in str(caught.value)


def test_workspace_is_head_plus_uncommitted_edits_with_the_remote_as_default(
    toy: Path, tmp_path: Path
):
    (toy / "step.py").write_text("# edited, not committed\n")
    (toy / "new.txt").write_text("untracked, not ignored")
    (toy / "raw.txt.dvc").unlink()  # a tracked file deleted in the working tree
    (toy / ".dvc" / "config.local").write_text("[core]\n    autostage = false\n")
    snapshot = take_snapshot(toy, tmp_path / "snap")
    (toy / "step.py").write_text("# edited after the flow started: not in its workspaces\n")

    remote = Remote("shared", str(tmp_path / "remote"))
    workspace = make_workspace(snapshot, tmp_path / "ws", remote)

    assert snapshot.dirty and snapshot.commit == git(toy, "rev-parse", "HEAD")
    assert git(workspace, "rev-parse", "HEAD") == snapshot.commit
    assert (workspace / "step.py").read_text() == "# edited, not committed\n"
    assert (workspace / "new.txt").read_text() == "untracked, not ignored"
    assert not (workspace / "raw.txt.dvc").exists()
    config = Config(dvc_dir=str(workspace / ".dvc"))
    assert config["core"]["remote"] == "shared"
    assert config["remote"]["shared"]["url"] == remote.url
    assert "autostage = false" in (workspace / ".dvc" / "config.local").read_text()


def test_remote_defaults_beside_the_checkout_and_honours_a_configured_one(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("KDFLOW_DVC_REMOTE", raising=False)

    default = resolve_remote(toy, None)

    assert default == Remote(FLOW_REMOTE_NAME, str(toy.parent / "kdflow-remote"))
    assert Path(default.url).is_dir()
    assert f"remote = {FLOW_REMOTE_NAME}" in (toy / ".dvc" / "config.local").read_text()
    # Registered as the checkout's default, so plain `dvc repro --pull` here finds it too.
    assert resolve_remote(toy, None) == default

    (toy / ".dvc" / "config.local").unlink()
    storage = tmp_path / "storage"
    (toy / ".dvc" / "config").write_text(
        f"[core]\n    analytics = false\n    remote = store\n"
        f"['remote \"store\"']\n    url = {storage}\n"
    )
    assert resolve_remote(toy, None) == Remote("store", str(storage))
    assert not (toy / ".dvc" / "config.local").exists()  # the user's setup is left alone
    monkeypatch.setenv("KDFLOW_DVC_REMOTE", "s3://bucket/kdflow")
    assert resolve_remote(toy, None) == Remote(FLOW_REMOTE_NAME, "s3://bucket/kdflow")


def test_error_line_prefers_the_stage_message_over_dvc_wrapping():
    lines = [
        "Running stage 'bad':",
        "> python step.py bad out/bad.txt",
        "Traceback (most recent call last):",
        '  File "step.py", line 9, in <module>',
        "RuntimeError: boom in bad",
        "ERROR: failed to reproduce 'bad': failed to run: python step.py bad, exited with 1",
    ]
    assert error_line(lines) == "RuntimeError: boom in bad"
    assert error_line(["kdflow prepare: error: data.path '/x' does not exist", *lines[-1:]]) == (
        "kdflow prepare: error: data.path '/x' does not exist"
    )
    assert error_line(["ERROR: failed to push data to the cloud"]) == (
        "ERROR: failed to push data to the cloud"
    )


def test_ran_and_restored_stages_from_repro_output():
    lines = [
        "Stage 'a' is cached - skipping run, checking out outputs",
        "Running stage 'b@x':",
        "> python step.py b@x",
    ]
    assert ran_stages(lines) == ["b@x"]
    assert restored_stages(lines) == ["a"]
