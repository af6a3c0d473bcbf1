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
def gate(session: nox.Session) -> None:
    """Run cells and gate them against their committed baseline: the one command CI and GPU runners call.

    `nox -s gate`: the smoke profile on this CPU against baselines/cpu-smoke.
    `nox -s gate -- --device cuda`: the `gate` profile (the paper's shapes, short runs) on the first GPU against
    baselines/<gpu>-gate (e.g. h100-gate); a missing baseline is reported loudly as nothing to compare.
    Other arguments go to `ctbench run` (e.g. `--task stiff-rk4`). The run's records, its report and the gate's
    Markdown (gate.md, also appended to $GITHUB_STEP_SUMMARY) land in results/gate-<time>/ and reports/.
    """
    _install(session, "torchdiffeq,torchode,torchsde")
    args = list(session.posargs)
    cuda = "--device" in args and args[args.index("--device") + 1 : args.index("--device") + 2] == ["cuda"]
    if cuda:
        name = session.run("python", "-c", "from suite.gate import baseline_name; print(baseline_name())",
                           silent=True).strip().splitlines()[-1]
        profile = "gate"
    else:
        name, profile = "cpu-smoke", "smoke"
    baseline = os.path.join("baselines", name)
    run_dir = os.path.join("results", f"gate-{_stamp()}")
    if "--task" not in args and os.path.exists(os.path.join(baseline, "baseline.json")):
        import json

        with open(os.path.join(baseline, "baseline.json")) as fh:
            for task in json.load(fh)["tasks"]:
                args += ["--task", task]
    # cells that end in error are the gate's business (a status regression), not a reason to stop here
    session.run("ctbench", "run", "--profile", profile, "--out", run_dir, "--report", *args, success_codes=[0, 1])
    session.run("ctbench", "gate", run_dir, "--baseline", baseline, "--markdown", os.path.join(run_dir, "gate.md"))


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
