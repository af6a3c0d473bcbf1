"""Plug-ins: the example package (examples/ctbench-decay) installed as a user would, its task and backend
run through `ctbench run` in-process and with the local executor; the loader's own contract on a
throw-away registry (entry points found, loaded once, failures named)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from suite import registry as registry_module
from suite.registry import PluginError, Registry, load_plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ctbench-decay"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install` of the example into a folder of its own (offline: no build isolation, no dependencies),
    built from a copy so that the build leaves nothing in the checkout."""
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, cwd=source.parent)
    return target


def ctbench(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    env.pop("CTBENCH_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "suite", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


@pytest.mark.slow  # pip and six ctbench processes, ~35 s: in CI's slow step (.ci/run)
def test_the_example_plugin_runs_through_ctbench_run_in_process_and_in_job_processes(installed, tmp_path):
    spec = str(EXAMPLE / "decay.toml")
    listing = ctbench(["list"], installed, tmp_path)
    assert listing.returncode == 0 and "decay" in listing.stdout and "midpoint-loop" in listing.stdout
    results = {}
    for executor in ("inprocess", "local"):
        out = tmp_path / executor
        done = ctbench(["run", "--spec", spec, "--out", str(out), "--executor", executor], installed, tmp_path)
        assert done.returncode == 0, done.stderr
        recs = records(out)
        assert {r["backend"] for r in recs} == {"midpoint-loop", "engine", "torchdiffeq"}
        assert all(r["status"] == "ok" and r["task"] == "decay" for r in recs), [r["reason"] for r in recs]
        if executor == "local":
            assert all(r["executor"]["kind"] == "local" for r in recs)  # each in its own worker process
        results[executor] = {r["backend"]: r["metrics"] for r in recs}
    # the same explicit midpoint rule in three backends, in two kinds of process: the same numbers
    assert results["inprocess"] == results["local"]
    errors = results["inprocess"]
    assert errors["midpoint-loop"]["rel_err_grad_k"] == pytest.approx(errors["engine"]["rel_err_grad_k"], rel=1e-4)
    assert 0 < errors["midpoint-loop"]["rel_err_y_T"] < 5e-3  # second order at 64 steps, not exact
    # the gate is handed the plug-in task's own rules: its metrics are compared, not skipped
    compared = ctbench(["compare", str(tmp_path / "inprocess"), str(tmp_path / "local"), "--spec", spec],
                       installed, tmp_path)
    assert compared.returncode == 0 and "0 regression(s); 6 check(s) within tolerance" in compared.stderr


def test_without_the_plugin_its_spec_is_refused_by_name(tmp_path):
    done = ctbench(["run", "--spec", str(EXAMPLE / "decay.toml"), "--out", str(tmp_path / "x")], tmp_path, tmp_path)
    assert done.returncode == 2 and "unknown task 'decay'" in done.stderr


def test_a_plugin_module_that_cannot_be_imported_is_named(tmp_path):
    env = {**os.environ, "CTBENCH_PLUGINS": "no_such_ctbench_plugin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "suite", "list"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "CTBENCH_PLUGINS names 'no_such_ctbench_plugin', which cannot be imported" in done.stderr


def _distribution(site: Path, name: str, entry_points: str, module: str = "") -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    if module:
        (site / f"{name}.py").write_text(module)


@pytest.fixture
def things(monkeypatch, tmp_path):
    """A registry of its own group, forgotten afterwards (the real task and backend registries are untouched)."""
    group = "ctbench.test-things"
    things: Registry = Registry("thing", entry_point_group=group)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "_loaded", set())
    monkeypatch.delenv("CTBENCH_PLUGINS", raising=False)
    yield things
    registry_module._PLUGGABLE.pop(group)


def test_entry_points_register_an_instance_under_their_name_once(things, tmp_path):
    _distribution(tmp_path, "thingpkg", "[ctbench.test-things]\nwidget = thingpkg:Widget\n",
                  "class Widget:\n    made = 0\n    def __init__(self):\n        Widget.made += 1\n")
    load_plugins()
    load_plugins()  # a second call loads nothing again
    widget = things.get("widget")
    assert type(widget).__name__ == "Widget" and type(widget).made == 1 and widget.name == "widget"
    assert "thingpkg 1.0" in things.from_entry_points["widget"]


def test_a_broken_or_clashing_entry_point_is_an_error_that_names_it(things, tmp_path):
    things.add("widget", object())
    _distribution(tmp_path, "clash", "[ctbench.test-things]\nwidget = clash:Widget\n", "class Widget:\n    pass\n")
    with pytest.raises(PluginError, match=r"ctbench.test-things: widget = clash:Widget \(clash 1.0\).*already"):
        load_plugins()
    _distribution(tmp_path, "broken", "[ctbench.test-things]\ngizmo = broken:Gizmo\n", "raise ImportError('no')\n")
    with pytest.raises(PluginError, match=r"gizmo = broken:Gizmo \(broken 1.0\) cannot be loaded: ImportError: no"):
        load_plugins()
