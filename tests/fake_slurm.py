"""Stand-ins for SLURM's sbatch, srun, sacct and scontrol, so the SLURM path runs without a cluster.

`install(folder)` writes them into `folder/bin` (put it first on PATH). sbatch keeps each submitted script in
`folder/scripts/` and answers "Submitted batch job N"; with FAKE_SLURM_RUN=1 it also runs every array task of
the script in the background with the environment SLURM gives a job (SLURM_JOB_ID, SLURM_ARRAY_*, ...), and
srun simply runs its command. sacct reports states from `folder/states.json` (job id → state), which the
background runner fills (RUNNING, then COMPLETED or FAILED) and a test may overwrite.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

SBATCH = r'''#!{python}
import json, os, re, subprocess, sys, time
from pathlib import Path
root = Path({root!r})
script = Path(sys.argv[-1]).read_text()
if os.environ.get("FAKE_SLURM_REJECT"):
    print("sbatch: error: Batch job submission failed: Invalid account or account/partition combination",
          file=sys.stderr)
    sys.exit(1)
counter = root / "counter"
n = int(counter.read_text()) + 1 if counter.exists() else 4200
counter.write_text(str(n))
(root / "scripts").mkdir(exist_ok=True)
(root / "scripts" / f"{{n}}.sh").write_text(script)
print(f"Submitted batch job {{n}}")
sys.stdout.flush()
if os.environ.get("FAKE_SLURM_RUN") != "1":
    sys.exit(0)
array = re.search(r"#SBATCH --array=0-(\d+)", script)
tasks = range(int(array.group(1)) + 1) if array else [None]
folder = re.search(r"#SBATCH --output=(\S+)/%", script).group(1)
runner = root / "run_task.py"
for k in tasks:
    job = f"{{n}}_{{k}}" if k is not None else str(n)
    subprocess.Popen([sys.executable, str(runner), str(root), job, folder, str(root / "scripts" / f"{{n}}.sh")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
'''

RUN_TASK = r'''import json, os, subprocess, sys, time, fcntl
from pathlib import Path
root, job, folder, script = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]

def set_state(state):
    path = root / "states.json"
    with open(root / "states.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        states = json.loads(path.read_text()) if path.exists() else {{}}
        states[job] = state
        path.write_text(json.dumps(states))

set_state("PENDING")
deadline = time.time() + 60
while not (folder / f"{{job}}_submitted.pkl").exists() and time.time() < deadline:
    time.sleep(0.05)   # submitit renames the pickles after sbatch returns
main, _, task = job.partition("_")
env = dict(os.environ, SLURM_JOB_ID=str(int(main) * 1000 + int(task or 0)), SLURM_NTASKS="1", SLURM_PROCID="0",
           SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost")
if task:
    env.update(SLURM_ARRAY_JOB_ID=main, SLURM_ARRAY_TASK_ID=task)
set_state("RUNNING")
with open(folder / f"{{job}}_0_log.err", "a") as err:
    code = subprocess.call(["bash", script], env=env, stdout=subprocess.DEVNULL, stderr=err)
set_state("COMPLETED" if code == 0 else "FAILED")
'''

SACCT = r'''#!{python}
import json, sys
from pathlib import Path
path = Path({root!r}) / "states.json"
states = json.loads(path.read_text()) if path.exists() else {{}}
wanted = {{sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"}}
print("JobID|State|NodeList")
for job, state in states.items():
    if job.split("_")[0] in wanted:
        print(f"{{job}}|{{state}}|localhost")
'''

SRUN = '''#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in --output|--error) shift 2;; --*) shift;; *) break;; esac; done
exec "$@"
'''

SCONTROL = '''#!/bin/sh
echo "$@" >> {root}/scontrol.log
'''


def install(folder: Path) -> Path:
    """Write the fake commands; return the bin directory to put first on PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    files = {"sbatch": SBATCH.format(python=sys.executable, root=str(folder)),
             "sacct": SACCT.format(python=sys.executable, root=str(folder)),
             "srun": SRUN, "scontrol": SCONTROL.format(root=folder)}
    for name, text in files.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (folder / "run_task.py").write_text(RUN_TASK.format())
    return bin_dir


def set_states(folder: Path, states: dict[str, str]) -> None:
    path = folder / "states.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(states)
    path.write_text(json.dumps(current))


def path_with(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
