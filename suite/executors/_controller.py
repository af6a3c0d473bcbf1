"""submitit's local job controller, also writing how its task ended (`<job id>_exit.json`).

submitit's Controller starts the cell's process, kills it at the job's time limit (SIGINT, then SIGKILL) and
restarts it when it asks to be requeued, but does not keep the exit status. A cell that segfaults, calls
exit() or is killed at its hard timeout writes no record, so the status is what the run records for it: the
controller, not the coordinator, writes it, because the controller outlives a coordinator killed with -9.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from submitit.local.local import Controller

EXIT_SUFFIX = "_exit.json"


class ExitRecordingController(Controller):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.attempts = 0
        self.started = time.time()

    def wait(self, freq: int = 24):
        self.attempts += 1
        codes = super().wait(freq)
        timed_out = any(code is None for code in codes)
        info = {"exit_codes": codes, "timed_out": timed_out, "attempts": self.attempts,
                "limit_s": self.timeout_s, "elapsed_s": round(time.time() - self.started, 3)}
        path = self.folder / f"{self.pid}{EXIT_SUFFIX}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
        return codes


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m suite.executors._controller <submitit folder>")
    ExitRecordingController(Path(sys.argv[1])).run()
