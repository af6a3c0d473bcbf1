"""A one-node SLURM cluster on this machine, with accounting, for `nox -s slurm` (stdlib only).

    python tests/real_slurm/cluster.py install        # Debian's slurm-wlm, slurmdbd, munge, MariaDB, if missing
    python tests/real_slurm/cluster.py start DIR      # configs and state under DIR; returns once the node is idle
    python tests/real_slurm/cluster.py stop DIR       # stops every daemon started by `start DIR`, even half-started

What a user's cluster has, in small: munged (its own key, on munge's default socket), a private MariaDB,
slurmdbd (so `sacct` answers from real accounting), slurmctld and slurmd. One node with this machine's CPUs and
most of its memory, one partition that allows requeue, no cgroup plug-ins (proctrack/linuxproc, task/none: a
container has no cgroup delegation). Nothing is written outside DIR except what the packages install and munge's
socket; the default ports (6817-6819) must be free. Clients find the cluster through
`SLURM_CONF=DIR/etc/slurm.conf` (printed by `start`).

Exit codes: 0 done; 77 this machine cannot run the daemons (not root, no apt-get, a daemon that will not start):
one line on stderr says why, and `nox -s slurm` reports it as a skip; 1 anything else.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CANNOT_RUN_HERE = 77
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server", "mariadb-client")
NEEDED = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "mariadb", "sacctmgr",
          "sinfo", "sbatch", "sacct", "scontrol")
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "mariadb", "munged")  # stop order: the reverse of start
PORTS = {"slurmctld": 6817, "slurmd": 6818, "slurmdbd": 6819}
DB_PORT = 3399
CLUSTER = "ctbench"
PARTITION = "debug"
START_TIMEOUT_S = 90.0


class CannotRunHere(RuntimeError):
    """This machine cannot host the daemons (permissions, packages, a daemon that will not start)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def missing_commands() -> list[str]:
    return [name for name in NEEDED if _which(name) is None]


def install() -> None:
    """apt-get install the packages whose commands are missing (root only)."""
    if not missing_commands():
        return
    if os.geteuid() != 0:
        raise CannotRunHere(f"SLURM is not installed ({', '.join(missing_commands())} missing) and installing it "
                            "needs root")
    if shutil.which("apt-get") is None:
        raise CannotRunHere(f"SLURM is not installed ({', '.join(missing_commands())} missing) and there is no "
                            "apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # the packages' scripts must not start system-wide daemons of their own: policy-rc.d 101 forbids it
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
        if subprocess.run(command, env=env, capture_output=True, text=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise CannotRunHere(f"apt-get could not install {' '.join(PACKAGES)}: {last}")
    finally:
        if not had_policy:
            policy.unlink(missing_ok=True)
    if missing_commands():
        raise CannotRunHere(f"installed {' '.join(PACKAGES)}, yet {', '.join(missing_commands())} still missing")


# ------------------------------------------------------------------ configuration
def _node_line() -> tuple[str, int, int]:
    """This machine as slurmd detects it, with 90 % of its memory (slurmd drains a node that reports less)."""
    detected = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in detected.splitlines()[0].split() if "=" in item)
    memory = int(int(fields["RealMemory"]) * 0.9)
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    line = " ".join(f"{k}={fields[k]}" for k in keep if k in fields) + f" RealMemory={memory}"
    return line, int(fields["CPUs"]), memory


def write_configs(root: Path) -> dict[str, object]:
    etc, spool, log, run = (root / name for name in ("etc", "spool", "log", "run"))
    for folder in (etc, spool / "slurmctld", spool / "slurmd", log, run):
        folder.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    node, cpus, memory = _node_line()
    slurm_conf = etc / "slurm.conf"
    slurm_conf.write_text("\n".join([
        f"ClusterName={CLUSTER}",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root", "SlurmdUser=root",
        # a requeued job may start again once its old credential expired: 10 s here (SLURM's default is 120)
        "AuthType=auth/munge", "CredType=cred/munge", "AuthInfo=cred_expire=10",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SwitchType=switch/none", "MpiDefault=none",
        "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU_Memory",
        "ReturnToService=2", "JobRequeue=1",
        # a time limit is enforced when reached (no grace), its kill follows SIGTERM after 5 s
        "OverTimeLimit=0", "KillWait=5", "InactiveLimit=0", "MinJobAge=300", "SchedulerParameters=sched_interval=2",
        f"SlurmctldPort={PORTS['slurmctld']}", f"SlurmdPort={PORTS['slurmd']}",
        f"StateSaveLocation={spool / 'slurmctld'}", f"SlurmdSpoolDir={spool / 'slurmd'}",
        f"SlurmctldPidFile={run / 'slurmctld.pid'}", f"SlurmdPidFile={run / 'slurmd.pid'}",
        f"SlurmctldLogFile={log / 'slurmctld.log'}", f"SlurmdLogFile={log / 'slurmd.log'}",
        "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
        f"AccountingStoragePort={PORTS['slurmdbd']}", "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=5",
        f"NodeName={host} NodeAddr=127.0.0.1 {node} State=UNKNOWN",
        # each job's default memory is one CPU's share, so jobs of one CPU run side by side
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP "
        f"DefMemPerCPU={memory // cpus}",
        "",
    ]))
    password = secrets.token_hex(12)
    dbd_conf = etc / "slurmdbd.conf"
    dbd_conf.write_text("\n".join([
        "AuthType=auth/munge",
        "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={PORTS['slurmdbd']}", "SlurmUser=root",
        f"PidFile={run / 'slurmdbd.pid'}", f"LogFile={log / 'slurmdbd.log'}",
        "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={DB_PORT}",
        "StorageUser=slurm", f"StoragePass={password}", "StorageLoc=slurm_acct_db", "",
    ]))
    dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read (it holds the database password)
    return {"slurm_conf": slurm_conf, "password": password, "host": host}


# ------------------------------------------------------------------ daemons
def _pid_file(root: Path, daemon: str) -> Path:
    return root / "run" / f"{daemon}.pid"


def _wait(what: str, ready, timeout_s: float = START_TIMEOUT_S, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = f"; last line of {log}: {lines[-1] if lines else '(empty)'}"
    raise CannotRunHere(f"{what} did not come up within {timeout_s:.0f} s{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(command: list[str], what: str, env: dict | None = None, log: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or "(no message)").splitlines()[-1]
        if log is not None and log.exists():
            lines = log.read_text(errors="replace").strip().splitlines()
            message += f"; last line of {log}: {lines[-1] if lines else '(empty)'}"
        raise CannotRunHere(f"{what} failed (exit {done.returncode}): {message}")
    return done.stdout


def _munge_works() -> bool:
    encode = subprocess.run([_which("munge") or "munge", "-n"], capture_output=True, timeout=30)
    if encode.returncode != 0:
        return False
    return subprocess.run([_which("unmunge") or "unmunge"], input=encode.stdout, capture_output=True,
                          timeout=30).returncode == 0


def start_munge(root: Path) -> None:
    """munged as the munge user on munge's default socket, with its own key, pid and log under DIR/munge.

    The default socket, because SLURM's clients (sacctmgr, sacct) reach munge only there, whatever AuthInfo
    says. A munged already serving it (the machine's own) is used as it is, and left running."""
    if MUNGE_SOCKET.exists() and _munge_works():
        return
    munge = pwd.getpwnam("munge")
    folder = root / "munge"
    folder.mkdir(mode=0o700, exist_ok=True)
    key = folder / "munge.key"
    if not key.exists():
        key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    MUNGE_SOCKET.parent.chmod(0o755)  # clients need to reach the socket; munged refuses a writable folder
    for path in (folder, key, MUNGE_SOCKET.parent):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    root.chmod(0o755)
    command = [_which("munged"), f"--socket={MUNGE_SOCKET}", f"--key-file={key}",
               f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
               f"--seed-file={folder / 'munged.seed'}"]
    _run(["su", "-s", "/bin/sh", "munge", "-c", " ".join(command)], "munged", log=folder / "munged.log")
    _wait("munged", lambda: (folder / "munged.pid").exists() and _munge_works(), log=folder / "munged.log")
    if not _pid_file(root, "munged").is_symlink():
        _pid_file(root, "munged").symlink_to(folder / "munged.pid")


def start_mariadb(root: Path, password: str) -> None:
    """A private MariaDB on 127.0.0.1:DB_PORT with the slurm user and its database."""
    data, sock, log = root / "mariadb", root / "run" / "mariadb.sock", root / "log" / "mariadb.log"
    if not (data / "mysql").exists():
        _run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
              "--auth-root-authentication-method=socket", "--skip-test-db"], "mariadb-install-db")
    log.touch()
    subprocess.Popen([_which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
                      f"--port={DB_PORT}", "--bind-address=127.0.0.1", "--skip-name-resolve", "--user=root",
                      f"--pid-file={_pid_file(root, 'mariadb')}", f"--log-error={log}",
                      "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait("MariaDB", lambda: sock.exists() and _port_open(DB_PORT), log=log)
    sql = (f"CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
           f"CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
           f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
    _run([_which("mariadb"), "--no-defaults", f"--socket={sock}", "-u", "root", "-e", sql], "creating the slurm "
         "database user")


def start(root: Path) -> dict[str, str]:
    """Every daemon, in order, each waited for; returns the environment a client needs."""
    if os.geteuid() != 0:
        raise CannotRunHere("the SLURM daemons (slurmctld, slurmd as root, munged as munge) need root")
    if missing_commands():
        raise CannotRunHere(f"SLURM is not installed: {', '.join(missing_commands())} missing (run `install`)")
    busy = [f"{name} ({port})" for name, port in {**PORTS, "mariadb": DB_PORT}.items() if _port_open(port)]
    if busy:
        raise CannotRunHere(f"ports already in use: {', '.join(busy)} (another SLURM on this machine? stop it)")
    root.mkdir(parents=True, exist_ok=True)
    conf = write_configs(root)
    env = {**os.environ, "SLURM_CONF": str(conf["slurm_conf"])}
    start_munge(root)
    start_mariadb(root, conf["password"])
    log = root / "log"
    _run([_which("slurmdbd")], "slurmdbd", env=env, log=log / "slurmdbd.log")
    _wait("slurmdbd", lambda: _port_open(PORTS["slurmdbd"]), log=log / "slurmdbd.log")
    # the cluster exists in the accounting database before slurmctld registers with it
    _wait("slurmdbd's database", lambda: subprocess.run(
        [_which("sacctmgr"), "-i", "-n", "add", "cluster", CLUSTER], env=env, capture_output=True, text=True,
        timeout=60).returncode in (0, 1) and CLUSTER in subprocess.run(
        [_which("sacctmgr"), "-n", "-P", "list", "cluster", "format=cluster"], env=env, capture_output=True,
        text=True, timeout=60).stdout, log=log / "slurmdbd.log")
    _run([_which("slurmctld")], "slurmctld", env=env, log=log / "slurmctld.log")
    _run([_which("slurmd"), "-N", conf["host"]], "slurmd", env=env, log=log / "slurmd.log")
    _wait(f"node {conf['host']} idle in sinfo", lambda: subprocess.run(
        [_which("sinfo"), "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True,
        timeout=30).stdout.strip() == "idle", log=log / "slurmd.log")
    return {"SLURM_CONF": str(conf["slurm_conf"])}


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop(root: Path) -> list[str]:
    """Cancel the cluster's jobs, SIGTERM every daemon of DIR (SIGKILL after 15 s), then kill any process still
    carrying this cluster's SLURM_CONF (a job step orphaned by a killed slurmd); returns what it stopped. Safe to
    call on a half-started or an already stopped cluster, and it touches no other SLURM on the machine."""
    conf = root / "etc" / "slurm.conf"
    env = {**os.environ, "SLURM_CONF": str(conf)}
    controller = _read_pid(_pid_file(root, "slurmctld"))
    if controller is not None and _alive(controller):
        def queued() -> list[str]:
            return subprocess.run([_which("squeue"), "-h", "-o", "%A"], env=env, capture_output=True, text=True,
                                  timeout=30).stdout.split()

        with contextlib.suppress(subprocess.SubprocessError, OSError):
            jobs = queued()
            if jobs:
                subprocess.run([_which("scancel"), "--full", *jobs], env=env, capture_output=True, timeout=30)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and queued():
                    time.sleep(0.5)
    stopped = []
    for daemon in DAEMONS:
        pid = _read_pid(_pid_file(root, daemon))
        if pid is None or not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"{daemon} ({pid})")
    leftovers = _processes_with_env(f"SLURM_CONF={conf}")
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if leftovers:
        stopped.append(f"{len(leftovers)} leftover job process(es)")
    return stopped


def _processes_with_env(entry: str) -> list[int]:
    """Processes (not this one, nor its ancestors: a shell that exported SLURM_CONF) whose environment holds
    `entry`."""
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.encode() in environ:
            found.append(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours has ended
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("install", "start", "stop") or (argv[0] != "install" and len(argv) != 2):
        print("usage: cluster.py install | start DIR | stop DIR", file=sys.stderr)
        return 2
    try:
        if argv[0] == "install":
            install()
        elif argv[0] == "start":
            root = Path(argv[1]).resolve()
            try:
                env = start(root)
            except BaseException:
                stop(root)  # nothing half-started is left behind
                raise
            print(f"SLURM_CONF={env['SLURM_CONF']}")
        else:
            print("stopped: " + (", ".join(stop(Path(argv[1]).resolve())) or "nothing was running"))
    except CannotRunHere as exc:
        print(f"no real SLURM here: {exc}", file=sys.stderr)
        return CANNOT_RUN_HERE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
