"""The real-SLURM harness itself (tests/real_slurm/cluster.py), without starting anything: where the daemons
cannot run it says why in one line and exits 77, which `nox -s slurm` reports as a skip, never a pass."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "real_slurm" / "cluster.py"


@pytest.fixture
def cluster():
    spec = importlib.util.spec_from_file_location("ctbench_slurm_cluster", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out, captured
    return lines[0]


def test_without_root_it_skips_in_one_line(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    assert cluster.main(["start", str(tmp_path / "state")]) == cluster.CANNOT_RUN_HERE == 77
    assert _one_line(capsys) == ("no real SLURM here: the SLURM daemons (slurmctld, slurmd as root, munged as "
                                 "munge) need root")
    assert not (tmp_path / "state").exists()  # nothing was started, nothing written


def test_missing_packages_without_root_cannot_be_installed(cluster, monkeypatch, capsys):
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(cluster, "_which", lambda name: None)
    assert cluster.main(["install"]) == 77
    assert "SLURM is not installed (slurmctld, slurmd," in _one_line(capsys)


def test_a_busy_port_is_named_before_anything_starts(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cluster, "missing_commands", lambda: [])
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            busy.bind(("127.0.0.1", cluster.DB_PORT))
        except OSError:
            pytest.skip(f"port {cluster.DB_PORT} is taken on this machine already")
        busy.listen()
        assert cluster.main(["start", str(tmp_path / "state")]) == 77
    assert f"ports already in use: mariadb ({cluster.DB_PORT})" in _one_line(capsys)


def test_bad_arguments_are_a_usage_error(cluster, capsys):
    assert cluster.main(["begin"]) == 2
    assert "usage: cluster.py install | start DIR | stop DIR" in capsys.readouterr().err


def test_stop_on_a_cluster_that_never_started_stops_nothing(cluster, tmp_path, capsys):
    assert cluster.main(["stop", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "stopped: nothing was running"
