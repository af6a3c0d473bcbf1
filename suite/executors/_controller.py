"""submitit's local job controller, also writing how its task ended (`<job id>_exit.json`).

submitit's Controller starts the cell's process, kills it at the job's time limit (SIGINT, then SIGKILL) and
restarts it when it asks to be requeued, but does not keep the exit status. A cell that segfaults, calls
exit() or is killed at its hard timeout writes no record, so the status is what the run records for it: the
controller, not the coordinator, writes it, because the controller outlives a coordinator killed with -9.

Each cell's process leads a process group of its own, and the group is killed when the task ends or is
killed: whatever the cell started (a data-loader worker, a subprocess) dies with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from submitit.core import utils
from submitit.local.local import Controller

EXIT_SUFFIX = "_exit.json"


class ExitRecordingController(Controller):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.attempts = 0
        self.started = time.time()

    def start_tasks(self) -> None:
        """submitit's start_tasks, with each task in a process group of its own (`process_group=0`)."""
        self.folder.mkdir(exist_ok=True)
        paths = [utils.JobPaths(self.folder, self.pid, k) for k in range(self.ntasks)]
        self.stdouts = [p.stdout.open("a") for p in paths]
        self.stderrs = self.stdouts if self.stderr_to_stdout else [p.stderr.open("a") for p in paths]
        for k in range(self.ntasks):
            env = {**os.environ, "SUBMITIT_LOCAL_LOCALID": str(k), "SUBMITIT_LOCAL_GLOBALID": str(k),
                   "SUBMITIT_LOCAL_JOB_ID": self.pid}
            self.tasks.append(subprocess.Popen(self.command, shell=False, env=env, stderr=self.stderrs[k],
                                               stdout=self.stdouts[k], encoding="utf-8", process_group=0))

    def kill_tasks(self) -> None:
        """submitit's SIGINT-then-SIGKILL of each task, then SIGKILL to what is left of its process group."""
        groups = [task.pid for task in self.tasks]
        super().kill_tasks()
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    def wait(self, freq: int = 24):
        self.attempts += 1
        codes = super().wait(freq)
        timed_out = any(code is None for code in codes)
        info = {"exit_codes": codes, "timed_out": timed_out, "attempts": self.attempts,
                "limit_s": self.timeout_s, "elapsed_s": round(time.time() - self.started, 3)}
        path = self.folder / f"{self.pid}{EXIT_SUFFIX}"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(info))
            os.replace(tmp, path)
        except OSError:  # a full disk: the coordinator then records the job as ended without an exit status
            pass
        return codes


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m suite.executors._controller <submitit folder>")
    try:
        ExitRecordingController(Path(sys.argv[1])).run()
    except KeyboardInterrupt:  # Ctrl-C reaches the terminal's process group: the coordinator says it, once
        sys.exit(130)  # run() has killed the task and its group on the way out
