"""nox sessions: tests (default), lint, bench (smoke matrix → report), perf (engine benchmark), report.

Every session installs what it needs into its own virtualenv. torch is pinned to CTBENCH_TORCH
(default `torch==2.13.0`: on the CI machines that is a CPU wheel already on disk; pass another spec,
e.g. a CUDA build, on a GPU runner). Other versions are pinned by .ci/constraints.txt.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("CTBENCH_TORCH", "torch==2.13.0")
CONSTRAINTS = ".ci/constraints.txt"


def _install(session: nox.Session, extras: str) -> None:
    # torch in the same resolve as the project, so nothing can pull another torch build.
    session.install(*TORCH.split(), "-e", f".[{extras}]", "-c", CONSTRAINTS)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """pytest on CPU (no GPU needed). Slow tests: `nox -s tests -- -m slow`."""
    _install(session, "torchdiffeq,torchode,torchsde,test")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff", "-c", CONSTRAINTS)
    session.run("ruff", "check", "suite", "tests", "benchmarks", "noxfile.py", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The default matrix (the smoke profile of every task), then the report.

    Extra arguments go to `ctbench run`, e.g. `nox -s bench -- --profile paper --device cuda`.
    """
    _install(session, "torchdiffeq,torchode,torchsde")
    run_dir = os.path.join("results", f"bench-{_stamp()}")
    session.run("ctbench", "validate")
    # --report builds reports/<run-id>/ even when some cells failed; the exit code still says so.
    session.run("ctbench", "run", "--out", run_dir, "--report", *session.posargs)


@nox.session(python="3.11")
def perf(session: nox.Session) -> None:
    """Engine vs torchdiffeq on an MLP neural ODE (pytest-benchmark): time and peak memory."""
    _install(session, "torchdiffeq,test")
    session.run("pytest", "benchmarks", "-m", "bench", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python="3.11")
def report(session: nox.Session) -> None:
    """Rebuild a report: `nox -s report -- results/<run-id>`."""
    _install(session, "torchdiffeq,torchode,torchsde")
    session.run("ctbench", "report", *session.posargs)


def _stamp() -> str:
    import datetime

    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
