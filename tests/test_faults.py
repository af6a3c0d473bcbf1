"""Faults a real user causes: each ends in a clear message or the right status, and nothing computed is lost."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import registered_backend
from stubs import CAPS, _StubSolver, cell

from suite.backends import AbstractBackend
from suite.cell import run_cell
from suite.cli import Reporter, main
from suite.data import bsds300
from suite.executors.inprocess import run_cells
from suite.records import RecordsError, read_records
from suite.report import build_report
from suite.spec import SpecError, expand, load_spec, spec_files
from suite.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
STIFF = ROOT / "suite" / "specs" / "stiff-rk4.toml"


def stiff_args(precision: str = "fp32") -> list[str]:
    return ["--task", "stiff-rk4", "--backend", "engine", "--precision", precision, "--scaling", "none",
            "--variant", "published"]


ENGINE_FP32 = stiff_args()


def behaving(name: str, behaviour) -> AbstractBackend:
    """A stub backend whose solver calls `behaviour(call_number)` before integrating."""
    solver_cls = type(f"Stub_{name}", (_StubSolver,), {"behaviour": "ok", "calls": 0})
    original = solver_cls.odeint

    def odeint(self, func, y0, t, params=None):
        behaviour(type(self).calls)
        return original(self, func, y0, t, params)

    solver_cls.odeint = odeint

    class Backend(AbstractBackend):
        caps = CAPS

        def solver(self, method, precision, scaling):
            return solver_cls(method, precision, scaling)

    backend = Backend()
    backend.name = name
    backend.solver_cls = solver_cls
    return backend


def user_spec(tmp_path: Path, backend: str, name: str = "mine.toml", extra_variant: str = "") -> Path:
    """The stiff-rk4 spec narrowed to one backend (a user's own spec file)."""
    text = STIFF.read_text()
    start, end = text.index("[matrix]"), text.index("[profiles.smoke]")
    matrix = (f'[matrix]\nvariant = ["published"]\nbackend = ["{backend}"]\nprecision = ["fp32", "fp16"]\n'
              'scaling = ["none"]\nseed = [0]\n\n')
    text = text[:start] + matrix + text[end:]
    if extra_variant:
        text = text.replace("[solver]", f"{extra_variant}\n[solver]")
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- crashes and data loss
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a torch without usable CUDA")
def test_cuda_cells_without_cuda_are_unsupported_and_the_run_goes_on(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["run", "--task", "stiff-rk4", "--profile", "paper", "--out", str(out)]) == 0
    records = read_records(out)
    assert len(records) == len(expand(load_spec(STIFF), "paper"))
    assert {r["status"] for r in records} == {"unsupported"}
    assert all("CUDA was requested" in r["reason"] for r in records)
    assert records[0]["env"]["device_name"].startswith("unavailable")
    # --device cuda on the smoke profile too
    assert main(["run", *ENGINE_FP32, "--device", "cuda", "--out", str(tmp_path / "smoke")]) == 0
    assert read_records(tmp_path / "smoke")[0]["status"] == "unsupported"


def test_data_is_printed_as_plain_text_never_markup(tmp_path, capsys):
    message = "bad value [/red] in [bold]x[/bold] at [link=file:///etc]here[/link]"

    def fail(_call):
        raise RuntimeError(message)

    backend = behaving("stub-markup", fail)
    with registered_backend(backend.name, backend):
        out = tmp_path / "dir [red]x[/red]" / "run1"
        spec = user_spec(tmp_path, "stub-markup")
        assert main(["run", "--spec", str(spec), "--precision", "fp32", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err  # verbatim, not eaten as tags, and no MarkupError
    assert "dir [red]x[/red]" in err
    bad = tmp_path / "spec [b]x[not-a-tag.toml"
    bad.write_text(STIFF.read_text().replace("steps = 399", "steps = [1]"))
    assert main(["validate", str(bad)]) == 1
    assert "spec [b]x[not-a-tag.toml" in capsys.readouterr().out


def test_a_newline_terminated_corrupt_tail_is_moved_aside_not_built_upon(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 0
    path = out / "records.jsonl"
    with open(path, "a") as fh:
        fh.write('{"schema": 2, "cell_id": "half a rec\n')  # garbled, newline-terminated
    with pytest.warns(UserWarning, match="skipping the last line"):
        assert len(read_records(out)) == 1
    assert main(["run", *stiff_args("fp16"), "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "records.jsonl.corrupt" in err
    records = read_records(out)  # readable again, no warning
    assert [r["precision"] for r in records] == ["fp32", "fp16"]
    assert (out / "records.jsonl.corrupt").read_text() == '{"schema": 2, "cell_id": "half a rec\n'


def test_a_corrupt_line_in_the_middle_is_an_error_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 0
    path = out / "records.jsonl"
    good = path.read_text()
    path.write_text(good + "not json at all\n" + good)
    with pytest.raises(RecordsError, match=r"records.jsonl:2: not JSON"):
        read_records(out)
    assert main(["run", *ENGINE_FP32, "--out", str(out), "--resume"]) == 2
    assert "records.jsonl:2" in capsys.readouterr().err
    assert path.read_text() == good + "not json at all\n" + good  # nothing touched


_HOLDER = """
import sys, time
from suite.lock import RunLock
lock = RunLock(sys.argv[1], command="test holder").__enter__()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_and_a_dead_holder_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "choose another --out" in err
        assert not (out / "records.jsonl").exists()  # the refused run computed nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 0  # the kernel dropped the dead holder's lock
    assert f"pid {holder.pid}" in capsys.readouterr().err  # ... and the run says whose lock it took over
    assert len(read_records(out)) == 1


def test_the_report_goes_where_the_user_says_never_where_the_records_say(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "myrun"
    assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 0
    path = out / "records.jsonl"
    record = json.loads(path.read_text())
    for crafted in ("../../escaped", "/tmp/evil", "a/b", ".."):
        path.write_text(json.dumps({**record, "run_id": crafted}) + "\n")
        assert main(["report", str(out)]) == 2
        assert "is not a valid run id" in capsys.readouterr().err
    path.write_text(json.dumps({**record, "run_id": "someone-else"}) + "\n")
    assert main(["report", str(out)]) == 0
    assert (tmp_path / "reports" / "myrun" / "index.md").exists()
    assert not (tmp_path / "reports" / "someone-else").exists()
    # --out . names the current directory, a sensible id
    here = tmp_path / "run-here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["run", *ENGINE_FP32, "--out", "."]) == 0
    assert read_records(here)[0]["run_id"] == "run-here"
    with pytest.raises(RecordsError, match="not a valid run id"):
        run_cells([cell("engine")], tmp_path / "x", "../x")


@pytest.mark.parametrize(("table", "name"), [("variants", "../evil"), ("variants", "a b"),
                                             ("variants", "x/y"), ("profiles", ".hidden")])
def test_names_that_become_file_names_are_checked(tmp_path, table, name):
    text = STIFF.read_text() + f'\n[{table}."{name}"]\n'
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"name .* is not allowed: use letters, digits"):
        load_spec(path)


# ---------------------------------------------------------------- statuses
def test_a_cpu_allocator_failure_is_oom(tmp_path):
    def allocate(_call):
        torch.empty(2**50, dtype=torch.uint8)  # the real CPU allocator error: "can't allocate memory"

    backend = behaving("stub-cpu-oom", allocate)
    with registered_backend(backend.name, backend):
        outcome = run_cell(cell("stub-cpu-oom"))
    assert outcome["status"] == "oom", outcome["reason"]
    assert "can't allocate memory" in outcome["reason"]


@pytest.mark.parametrize("task", TASKS.names())
def test_every_task_checks_its_deadline(task, monkeypatch, tmp_path):
    monkeypatch.setenv("CTBENCH_CACHE", str(tmp_path))
    specs = {load_spec(p).task: load_spec(p) for p in spec_files()}
    assert task in specs, f"task {task} has no shipped spec"
    spec = specs[task]
    smoke = expand(spec, "smoke")
    for variant in dict.fromkeys(c.variant for c in smoke):  # every variant the smoke profile runs
        c = next(c for c in smoke if c.variant == variant and c.backend == "engine")
        c = dataclasses.replace(c, timeout_s=1e-9)
        outcome = run_cell(c, run_dir=tmp_path)
        assert outcome["status"] == "timeout", (c.cell_id, outcome["status"], outcome["reason"])


def test_repeated_axis_values_are_rejected(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(STIFF.read_text().replace('precision = ["fp32", "bf16", "fp16"]',
                                              'precision = ["fp32", "fp32", "fp16"]'))
    with pytest.raises(SpecError, match=r"matrix\.precision: .*'fp32' more than once"):
        load_spec(path)
    path.write_text(STIFF.read_text().replace("seed = [0]", "seed = [0, 1, 0]"))
    with pytest.raises(SpecError, match=r"matrix\.seed: .*'0' more than once"):
        load_spec(path)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("steps = 399", 'steps = "399"', r"solver\.steps: Input should be a valid integer"),
    ("y0_in_working_precision = true", 'y0_in_working_precision = "yes"',
     r"params\.y0_in_working_precision: Input should be a valid boolean"),
    ("T = 2.65", 'T = "2.65"', r"params\.T: Input should be a valid number"),
    ("steps = 399", "steps = 399.0", r"solver\.steps: Input should be a valid integer"),
    ("T = 2.65", "T = 2026-11-30", r"date/time 2026-11-30 is not a valid spec value"),
])
def test_specs_are_strict(tmp_path, old, new, expected):
    path = tmp_path / "spec.toml"
    path.write_text(STIFF.read_text().replace(old, new, 1))
    with pytest.raises(SpecError, match=expected):
        load_spec(path)


def test_a_run_loads_only_the_specs_it_needs_and_one_spec_per_task(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "cnf-2d.toml"
    broken.write_text((ROOT / "suite" / "specs" / "cnf-2d.toml").read_text().replace("[solver]", "[solverr]"))
    unreadable = tmp_path / "notes.toml"
    unreadable.write_bytes(b"\xff\xfe not toml")
    monkeypatch.setattr("suite.cli.run.spec_files", lambda: [STIFF, broken, unreadable])
    assert main(["run", *ENGINE_FP32, "--out", str(tmp_path / "a")]) == 0  # the broken cnf-2d spec is not needed
    assert main(["run", "--task", "cnf-2d", "--out", str(tmp_path / "b")]) == 2
    assert "solverr" in capsys.readouterr().err
    second = tmp_path / "stiff-copy.toml"
    second.write_text(STIFF.read_text())
    monkeypatch.setattr("suite.cli.run.spec_files", lambda: [STIFF, second])
    assert main(["run", *ENGINE_FP32, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert str(STIFF) in err and str(second) in err and "already defined by" in err
    assert main(["validate", str(STIFF), str(second)]) == 1


# ---------------------------------------------------------------- resume: inputs and policy
def _fake_bsds300(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for split, n in (("train", 2000), ("validation", 300), ("test", 300)):
            f[split] = rng.normal(size=(n, 63)).astype(np.float32) * 0.05
    return path


OTFLOW_ONE = ["--task", "otflow-bsds300", "--backend", "engine", "--precision", "fp32", "--scaling", "none",
              "--variant", "paper"]


def test_resume_never_mixes_data_sets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CTBENCH_BSDS300", raising=False)
    out = tmp_path / "run"
    assert main(["run", *OTFLOW_ONE, "--out", str(out)]) == 0
    assert read_records(out)[0]["inputs"]["dataset"] == "bsds300-proxy"
    monkeypatch.setenv("CTBENCH_BSDS300", str(_fake_bsds300(tmp_path / "BSDS300.hdf5")))
    assert main(["run", *OTFLOW_ONE, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "recorded 'bsds300-proxy', now 'BSDS300'" in err and "--rerun-changed" in err
    assert len(read_records(out)) == 1  # refused before anything ran
    assert main(["run", *OTFLOW_ONE, "--out", str(out), "--resume", "--rerun-changed"]) == 0
    records = read_records(out)
    assert [r["inputs"]["dataset"] for r in records] == ["bsds300-proxy", "BSDS300"]
    assert [r["extra"]["dataset"] for r in records] == ["bsds300-proxy", "BSDS300"]
    # the same real data again: nothing to re-run
    assert main(["run", *OTFLOW_ONE, "--out", str(out), "--resume"]) == 0
    assert len(read_records(out)) == 2


def test_the_report_labels_rows_of_different_data_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("CTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CTBENCH_BSDS300", raising=False)
    out = tmp_path / "run"
    assert main(["run", *OTFLOW_ONE, "--out", str(out)]) == 0
    monkeypatch.setenv("CTBENCH_BSDS300", str(_fake_bsds300(tmp_path / "BSDS300.hdf5")))
    assert main(["run", *OTFLOW_ONE[:-1], "otflow", "--out", str(out), "--resume"]) == 0
    build_report(out, tmp_path / "rep")
    csv = (tmp_path / "rep" / "otflow-bsds300.csv").read_text().splitlines()
    assert csv[0].startswith("data set,")
    assert any(line.startswith("bsds300-proxy,paper") for line in csv[1:])
    assert any(line.startswith("BSDS300,otflow") for line in csv[1:])


def test_resume_device_or_torch_change_is_not_mixed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 0
    monkeypatch.setattr("suite.cell.torch_build", lambda: "9.9.9 (cuda none)")
    assert main(["run", *ENGINE_FP32, "--out", str(out), "--resume"]) == 2
    assert "torch: recorded" in capsys.readouterr().err


def _statuses_run(tmp_path, stubs):
    cells = [cell("stub-ok"), cell("stub-raise"), cell("stub-nan"), cell("stub-oom"),
             cell("stub-slow", timeout_s=0.05, repeats=3), cell("stub-ok", scaling="dynamic")]
    run_cells(cells, tmp_path, "r")
    return cells


def test_resume_reruns_errors_only_unless_asked(tmp_path, stubs):
    cells = _statuses_run(tmp_path, stubs)
    calls = {name: b.solver_cls.calls for name, b in stubs.items()}
    summary = run_cells(cells, tmp_path, "r", resume=True)
    assert summary.counts == {"error": 1}  # only the error cell ran again
    assert summary.kept == {"ok": 1, "nonfinite": 1, "oom": 1, "timeout": 1, "unsupported": 1}
    assert {n: b.solver_cls.calls - calls[n] for n, b in stubs.items()} == {
        "ok": 0, "raise": 1, "nan": 0, "oom": 0, "slow": 0}
    summary = run_cells(cells, tmp_path, "r", resume=True, retry_failed=True)
    assert summary.counts == {"error": 1, "nonfinite": 1, "oom": 1, "timeout": 1}
    records = read_records(tmp_path)
    assert sum(r["status"] == "ok" for r in records) == 1  # an ok cell is never run twice


def test_an_unsupported_cell_runs_again_when_its_reason_changed(tmp_path, stubs, monkeypatch):
    c = cell("stub-ok", scaling="dynamic")
    run_cells([c], tmp_path, "r")
    assert run_cells([c], tmp_path, "r", resume=True).skipped == 1
    monkeypatch.setattr(type(stubs["ok"]), "caps", CAPS.__class__(
        methods=CAPS.methods, precisions=CAPS.precisions, scalings=frozenset({"none", "dynamic"})))
    summary = run_cells([c], tmp_path, "r", resume=True)
    assert summary.counts == {"ok": 1}


# ---------------------------------------------------------------- one line, no traceback
def _one_line_error(capsys, code_expected: int, argv: list[str]) -> str:
    assert main(argv) == code_expected
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert "Traceback" not in text
    return text


def test_unreadable_specs_are_one_line(tmp_path, capsys):
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(STIFF.read_bytes().replace(b"description", b"descr\xe9ption"))
    assert "not UTF-8 text" in _one_line_error(capsys, 1, ["validate", str(binary)])
    assert "is a directory" in _one_line_error(capsys, 1, ["validate", str(tmp_path)])
    assert "not UTF-8 text" in _one_line_error(capsys, 2, ["run", "--spec", str(binary)])
    assert "is a directory" in _one_line_error(capsys, 2, ["run", "--spec", str(tmp_path)])


def test_bad_records_files_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "records.jsonl").write_text("")
    assert "holds no records" in _one_line_error(capsys, 2, ["report", str(tmp_path / "empty")])
    out = tmp_path / "run"
    assert main(["run", *ENGINE_FP32, "--out", str(out)]) == 0
    record = json.loads((out / "records.jsonl").read_text())
    for key, value, expected in (("steps", "399", "key 'steps' should be an integer"),
                                 ("metrics", {"rel_err_y_T": "small"}, "metrics.rel_err_y_T should be a number"),
                                 ("status", "fine", "unknown status 'fine'")):
        (out / "records.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, key: value}) + "\n")
        text = _one_line_error(capsys, 2, ["report", str(out)])
        assert "records.jsonl:2: " + expected in text


def test_an_unwritable_output_folder_stops_before_any_cell(tmp_path, stubs, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    spec = user_spec(tmp_path, "stub-ok")
    text = _one_line_error(capsys, 2, ["run", "--spec", str(spec), "--out", str(blocker / "run")])
    assert "cannot write to the run directory" in text
    assert stubs["ok"].solver_cls.calls == 0


def test_a_full_disk_mid_run_stops_cleanly_and_keeps_the_computed_record(tmp_path, stubs, monkeypatch, capsys):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    spec = user_spec(tmp_path, "stub-ok")
    out = tmp_path / "run"
    real_write = os.write
    writes = {"n": 0}

    def write(fd, data):
        if b'"cell_id"' not in data:
            return real_write(fd, data)
        writes["n"] += 1
        if writes["n"] == 2 and str(out) in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("suite.records.os.write", write)
    text = _one_line_error(capsys, 2, ["run", "--spec", str(spec), "--out", str(out)])
    assert "No space left on device" in text and "--resume" in text
    records = read_records(out)
    assert len(records) == 1 and (out / "records.jsonl").read_text().endswith("\n")  # no half line
    unsaved = tmp_path / f"ctbench-unsaved-{records[0]['run_id']}.jsonl"
    assert str(unsaved) in text and len(read_records(unsaved)) == 1  # the second cell's result is kept


def test_ctrl_c_records_nothing_partial_and_says_how_to_resume(tmp_path, capsys):
    interrupted = []

    def interrupt_second(call):
        if call == 1 and not interrupted:
            interrupted.append(call)
            raise KeyboardInterrupt

    backend = behaving("stub-interrupt", interrupt_second)
    with registered_backend(backend.name, backend):
        spec = user_spec(tmp_path, "stub-interrupt")
        out = tmp_path / "run"
        text = _one_line_error(capsys, 130, ["run", "--spec", str(spec), "--out", str(out)])
        assert f"--out {out} --resume" in text and f"--spec {spec}" in text
        assert [r["precision"] for r in read_records(out)] == ["fp32"]
        assert main(["run", "--spec", str(spec), "--out", str(out), "--resume"]) == 0  # lock released
    assert [r["precision"] for r in read_records(out)] == ["fp32", "fp16"]


def test_a_corrupt_proxy_cache_is_named_and_rebuilt(tmp_path):
    first = bsds300.build_proxy(stride=16, root=tmp_path)
    (cached,) = tmp_path.glob("bsds300-proxy-*.npz")
    cached.write_bytes(b"PK\x03\x04 not a zip file")
    with pytest.warns(UserWarning, match=rf"proxy cache {cached} is corrupt .*it will be rebuilt"):
        again = bsds300.build_proxy(stride=16, root=tmp_path)
    np.testing.assert_array_equal(first.train, again.train)
    assert bsds300.build_proxy(stride=16, root=tmp_path).train.shape == first.train.shape  # valid again


# ---------------------------------------------------------------- a user's own spec
def test_run_a_users_own_spec_with_a_variant_filter(tmp_path, capsys):
    spec = user_spec(tmp_path, "engine", extra_variant='[variants.mine]\ntheta = [8.0, -9.0, 1.52587890625e-05]\n')
    text = spec.read_text().replace('variant = ["published"]', 'variant = ["published", "mine"]')
    spec.write_text(text)
    out = tmp_path / "run"
    assert main(["run", "--spec", str(spec), "--variant", "mine", "--precision", "fp32", "--out", str(out)]) == 0
    (record,) = read_records(out)
    assert record["variant"] == "mine" and record["status"] == "ok"
    assert record["spec"]["path"] == str(spec)
    import hashlib

    assert record["spec"]["sha256"] == hashlib.sha256(spec.read_bytes()).hexdigest()
    assert main(["run", "--spec", str(spec), "--variant", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "--variant 'nope' is not a variant" in capsys.readouterr().err




def test_reporter_progress_is_plain_text(capsys):
    reporter = Reporter()
    reporter.start(1, 0)
    c = cell("engine")
    reporter.cell_started(c)
    reporter.cell_finished(c, {"status": "error", "timing": {"total_s": 0.1}, "reason": "[bold]oops[/bold] [/"})
    reporter.finish(None)
    assert "[bold]oops[/bold] [/" in capsys.readouterr().err


def test_lock_without_flock_detects_a_stale_holder_by_pid_and_host(tmp_path, monkeypatch):
    import socket

    from suite import lock as lock_module

    monkeypatch.setattr(lock_module, "fcntl", None)  # e.g. a network file system without flock
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / lock_module.LOCK_NAME
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then", "command": "x"}))
    with lock_module.RunLock(tmp_path) as held:
        assert held.took_over["pid"] == dead.pid
        with pytest.raises(lock_module.RunLocked, match=f"pid {os.getpid()} on host"):
            lock_module.RunLock(tmp_path).acquire()  # a live holder (this process) is respected
    assert not path.exists()  # released
    path.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "since": "then", "command": "x"}))
    with pytest.raises(lock_module.RunLocked, match="on host another-host"):
        lock_module.RunLock(tmp_path).acquire()  # a pid on another host cannot be checked: not stale
