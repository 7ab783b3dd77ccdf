"""A real one-node Slurm cluster on localhost, for tests.

`LocalSlurmCluster` installs Debian's Slurm packages when they are missing
(test-time `apt-get install`, so a fresh CI machine needs nothing by hand),
then starts, from a private temporary directory and on private ports:

    munged -> mariadbd -> slurmdbd -> (sacctmgr add cluster) -> slurmctld -> slurmd

Accounting (slurmdbd + MariaDB) is not optional: submitit reads job states with
`sacct`, and without accounting every state reads UNKNOWN, so a job that dies
without writing its result is waited on forever.

Client commands (sbatch, squeue, sacct, scancel, scontrol, srun) find the
cluster through the SLURM_CONF environment variable; while the cluster is
running, `os.environ["SLURM_CONF"]` points at its generated slurm.conf (and is
restored on stop). submitit runs those commands as subprocesses, and sbatch
exports the environment into the jobs, so jobs' own `srun`/`scontrol requeue`
reach the same cluster.

Use the session-scoped pytest fixture, registered as a plugin (one cluster
for the whole session however many modules ask for it):

    pytest_plugins = ["tests.slurm_cluster"]   # in the test module or tests/conftest.py

    @pytest.mark.slurm
    def test_x(slurm_cluster):
        folder = slurm_cluster.new_submitit_folder("test_x")
        ... SlurmOptions(folder=folder, partition=slurm_cluster.partition) ...

If Slurm cannot be installed (not root, no apt-get, no network) the tests are
skipped with the reason; if it is installed but fails to start, the fixture
errors with the daemons' log tails.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

APT_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server"]
# One executable per role; all must be on PATH for the cluster to start.
REQUIRED_EXECUTABLES = [
    "munged", "slurmctld", "slurmd", "slurmdbd",
    "sbatch", "srun", "squeue", "sacct", "sacctmgr", "scontrol", "scancel", "sinfo",
]
_MARIADB_SERVER = ["mariadbd", "mysqld"]
_MARIADB_INSTALL_DB = ["mariadb-install-db", "mysql_install_db"]
_MARIADB_CLIENT = ["mariadb", "mysql"]
# The Debian packages put daemons in /usr/sbin, which a non-login PATH may lack.
_EXTRA_PATH = ["/usr/sbin", "/sbin", "/usr/bin"]


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed here (the tests should skip, not fail)."""


class SlurmStartupError(RuntimeError):
    """The packages are installed but the cluster did not come up."""


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_EXTRA_PATH)
    return shutil.which(name, path=path)


def _first_found(names: list[str]) -> str | None:
    for name in names:
        found = _which(name)
        if found:
            return found
    return None


def _missing_executables() -> list[str]:
    missing = [name for name in REQUIRED_EXECUTABLES if not _which(name)]
    for group in (_MARIADB_SERVER, _MARIADB_INSTALL_DB, _MARIADB_CLIENT):
        if not _first_found(group):
            missing.append(group[0])
    return missing


def ensure_slurm_installed(timeout_s: float = 900) -> None:
    """Install the Debian packages if any executable is missing.

    Raises SlurmUnavailable (with the reason) when that is impossible.
    """
    missing = _missing_executables()
    if not missing:
        return
    why = f"Slurm executables missing ({', '.join(missing)})"
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{why} and not root, so cannot apt-get install them")
    apt = _which("apt-get")
    if apt is None:
        raise SlurmUnavailable(f"{why} and no apt-get on this machine")
    # Without systemd, package scripts would try to start the daemons with the
    # Debian defaults (and slurmd/slurmctld fail without /etc/slurm/slurm.conf);
    # the standard policy-rc.d "101" tells them not to, for the install only.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = False
    if not policy.exists():
        try:
            policy.write_text("#!/bin/sh\n# temporary, from tests/slurm_cluster.py: start no services\nexit 101\n")
            policy.chmod(0o755)
            created_policy = True
        except OSError:
            pass
    try:
        _apt_install(apt, why, timeout_s)
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)


def _apt_install(apt: str, why: str, timeout_s: float) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for a dpkg lock held by someone else rather than failing at once.
    install = [apt, "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    deadline = time.monotonic() + timeout_s
    output = ""
    for attempt in ("install", "update+install"):
        try:
            if attempt == "update+install":
                upd = subprocess.run([apt, "-o", "DPkg::Lock::Timeout=300", "update"], env=env, capture_output=True, text=True,
                                     timeout=max(1.0, deadline - time.monotonic()))
                output = upd.stdout + upd.stderr
                if upd.returncode != 0:
                    break
            res = subprocess.run(install, env=env, capture_output=True, text=True,
                                 timeout=max(1.0, deadline - time.monotonic()))
            output = res.stdout + res.stderr
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{why}; apt-get timed out after {timeout_s:.0f}s") from None
        if res.returncode == 0 and not _missing_executables():
            return
    tail = " | ".join(line for line in output.strip().splitlines()[-3:])
    raise SlurmUnavailable(f"{why} and apt-get could not install them (no network?): {tail}")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _pids_with_env(marker: str) -> set[int]:
    found = set()
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.add(int(entry))
        except OSError:
            continue
    return found


def _ancestors(pid: int) -> set[int]:
    """pid and its ancestors (never to be killed)."""
    found = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found


class LocalSlurmCluster:
    """A one-node Slurm cluster with accounting, private to one temp directory.

    Attributes once started: `root` (temp dir), `conf` (slurm.conf path),
    `partition`, `cluster_name`, `node_name`, `cpus`, `real_memory_mb`,
    `submitit_root` (a folder for submitit folders; use `new_submitit_folder`),
    `env` (the variables a client command needs: {"SLURM_CONF": ...}).
    """

    def __init__(self, partition: str = "debug", cluster_name: str = "localtest",
                 start_timeout_s: float = 120.0, base_dir: str | None = None):
        self.partition = partition
        self.cluster_name = cluster_name
        self.start_timeout_s = start_timeout_s
        self._base_dir = base_dir
        self.root: Path | None = None
        self.conf: Path | None = None
        self.env: dict[str, str] = {}
        self.submitit_root: Path | None = None
        self.node_name = "node1"
        self.cpus = 1
        self.real_memory_mb = 1024
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}
        self._marker = f"LOCAL_SLURM_CLUSTER_ID={uuid.uuid4().hex}"
        self._saved_env: dict[str, str | None] = {}
        self._folder_count = 0
        self._started = False
        self.startup_s: float | None = None

    # ------------------------------------------------------------------ public

    def __enter__(self) -> "LocalSlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "LocalSlurmCluster":
        t0 = time.monotonic()
        ensure_slurm_installed()
        atexit.register(self.stop)
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Cancel jobs, kill every daemon and job process, remove the temp dir. Idempotent."""
        if not self._started:
            return
        self._started = False
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            self.run(["scancel", "--full", "--quiet", "--partition", self.partition], check=False, timeout=15)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                res = self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=15)
                if res.returncode != 0 or not res.stdout.strip():
                    break
                time.sleep(0.5)
        self._kill_all()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    def new_submitit_folder(self, name: str = "job") -> str:
        """A fresh, absolute submitit folder (job ids restart at 1 per cluster)."""
        assert self.submitit_root is not None, "cluster not started"
        self._folder_count += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
        folder = self.submitit_root / f"{self._folder_count:03d}_{safe}"
        folder.mkdir(parents=True)
        return str(folder)

    def run(self, cmd: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster."""
        env = dict(os.environ, **self.env)
        env["PATH"] = env.get("PATH", "") + os.pathsep + os.pathsep.join(_EXTRA_PATH)
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            res = subprocess.CompletedProcess(cmd, 124, e.stdout or "", f"timed out after {timeout}s")
        if check and res.returncode != 0:
            raise SlurmStartupError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}\n"
                                    + self.log_tails())
        return res

    def log_tails(self, lines: int = 25) -> str:
        parts = []
        for name, path in self._logs.items():
            proc = self._procs.get(name)
            status = "not started" if proc is None else (
                "running" if proc.poll() is None else f"exited {proc.returncode}")
            parts.append(f"--- {name} ({status}) {path} ---\n{_tail(path, lines)}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- startup

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="slurm-test-", dir=self._base_dir))
        # Daemons running as munge / mysql must traverse it.
        self.root.chmod(0o755)
        for sub in ("etc", "log", "run", "ctld", "spool", "submitit"):
            (self.root / sub).mkdir()
        (self.root / "log").chmod(0o777)
        self.submitit_root = self.root / "submitit"
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self._deadline = time.monotonic() + self.start_timeout_s

        db_port, dbd_port, ctld_port, slurmd_port = _free_ports(4)
        self._detect_node()
        self._start_munge()
        self._start_mariadb(db_port)
        self._write_configs(db_port, dbd_port, ctld_port, slurmd_port)
        for key, value in self.env.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait("slurmdbd answers sacctmgr",
                   lambda: self.run(["sacctmgr", "-n", "-P", "list", "cluster"], check=False).returncode == 0,
                   proc="slurmdbd")
        listed = self.run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"]).stdout.split()
        if self.cluster_name not in listed:
            self.run(["sacctmgr", "-i", "add", "cluster", self.cluster_name])

        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])

        def ctld_up() -> bool:
            res = self.run(["scontrol", "ping"], check=False)
            return res.returncode == 0 and "UP" in res.stdout
        self._wait("slurmctld answers scontrol ping", ctld_up, proc="slurmctld")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node_name])

        def node_idle() -> bool:
            res = self.run(["sinfo", "-h", "-N", "-n", self.node_name, "-o", "%T"], check=False)
            return res.returncode == 0 and res.stdout.strip().rstrip("*~#$@+") == "idle"
        self._wait(f"node {self.node_name} idle in sinfo", node_idle, proc="slurmd")
        self._wait("sacct works", lambda: self.run(["sacct", "-n", "-X"], check=False).returncode == 0)

    def _detect_node(self) -> None:
        """CPUs and memory as slurmd itself sees them (a node configured larger is drained)."""
        self.cpus = os.cpu_count() or 1
        self.real_memory_mb = 1024
        self._topology = f"CPUs={self.cpus}"
        try:
            mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
            self.real_memory_mb = mem_kb // 1024
        except (OSError, AttributeError, ValueError):
            pass
        res = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, SLURM_CONF=str(self.root / "etc" / "none.conf")))
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("NodeName=")), "")
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "CPUs" in fields:
            self.cpus = int(fields["CPUs"])
            keep = ["CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore"]
            self._topology = " ".join(f"{k}={fields[k]}" for k in keep if k in fields)
        if "RealMemory" in fields:
            self.real_memory_mb = int(fields["RealMemory"])
        # Leave headroom so a slightly smaller report at registration doesn't drain the node.
        self.real_memory_mb = max(256, int(self.real_memory_mb * 0.9))

    def _start_munge(self) -> None:
        munge_dir = self.root / "munge"
        munge_dir.mkdir(mode=0o700)
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        pw = pwd.getpwnam("munge")
        for path in (munge_dir, key):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        self.munge_socket = munge_dir / "munge.socket"
        log = self._log_path("munged")
        self._spawn("munged", [
            _which("munged"), "--foreground", "--force",
            f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'munged.seed'}",
            f"--log-file={log}",
        ], user="munge", log=log)
        self._wait("munged socket", lambda: self.munge_socket.exists(), proc="munged")

    def _start_mariadb(self, port: int) -> None:
        datadir = self.root / "mariadb"
        rundir = self.root / "mariadb-run"
        pw = pwd.getpwnam("mysql")
        for d in (datadir, rundir):
            d.mkdir()
            os.chown(d, pw.pw_uid, pw.pw_gid)
        install_log = self._log_path("mariadb-install-db")
        with open(install_log, "w") as fh:
            res = subprocess.run([
                _first_found(_MARIADB_INSTALL_DB), "--no-defaults", f"--datadir={datadir}",
                "--user=mysql", "--auth-root-authentication-method=socket",
                "--skip-test-db", "--skip-name-resolve",
            ], stdout=fh, stderr=subprocess.STDOUT, timeout=max(10.0, self._deadline - time.monotonic()))
        if res.returncode != 0:
            raise SlurmStartupError(f"mariadb-install-db failed ({res.returncode}):\n{_tail(install_log, 40)}")
        self.db_socket = rundir / "mysqld.sock"
        log = self._log_path("mariadbd")
        self._spawn("mariadbd", [
            _first_found(_MARIADB_SERVER), "--no-defaults", f"--datadir={datadir}",
            f"--socket={self.db_socket}", f"--port={port}", "--bind-address=127.0.0.1",
            f"--pid-file={rundir / 'mysqld.pid'}", "--user=mysql", f"--log-error={log}",
            "--skip-log-bin", "--innodb-buffer-pool-size=64M", "--innodb-use-native-aio=0",
            "--skip-name-resolve",
        ], log=log)
        client = _first_found(_MARIADB_CLIENT)
        self._db_password = uuid.uuid4().hex

        def sql(statement: str) -> subprocess.CompletedProcess:
            return subprocess.run([client, "--no-defaults", f"--socket={self.db_socket}", "-u", "root",
                                   "-e", statement], capture_output=True, text=True, timeout=30)
        self._wait("mariadbd accepts connections", lambda: sql("SELECT 1").returncode == 0, proc="mariadbd")
        res = sql(
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self._db_password}';"
            f"CREATE USER 'slurm'@'localhost' IDENTIFIED BY '{self._db_password}';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
        )
        if res.returncode != 0:
            raise SlurmStartupError(f"creating the slurm database user failed: {res.stderr}")

    def _write_configs(self, db_port: int, dbd_port: int, ctld_port: int, slurmd_port: int) -> None:
        host = socket.gethostname().split(".")[0]
        auth_info = f"socket={self.munge_socket},cred_expire=10"
        etc, run, log = self.root / "etc", self.root / "run", self.root / "log"
        for name in ("slurmdbd", "slurmctld", "slurmd"):
            self._logs[name] = log / f"{name}.log"
        dbd_conf = etc / "slurmdbd.conf"
        dbd_conf.write_text("\n".join([
            "AuthType=auth/munge",
            f"AuthInfo={auth_info}",
            f"DbdHost={host}",
            "DbdAddr=127.0.0.1",
            f"DbdPort={dbd_port}",
            "SlurmUser=root",
            f"PidFile={run / 'slurmdbd.pid'}",
            f"LogFile={log / 'slurmdbd.log'}",
            "DebugLevel=info",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={db_port}",
            "StorageUser=slurm",
            f"StoragePass={self._db_password}",
            "StorageLoc=slurm_acct_db",
            "",
        ]))
        dbd_conf.chmod(0o600)  # slurmdbd refuses a world-readable conf (it holds the DB password)
        mem_per_cpu = max(1, self.real_memory_mb // max(1, self.cpus))
        (etc / "plugstack.conf").write_text("")
        self.conf.write_text("\n".join([
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo={auth_info}",
            f"StateSaveLocation={self.root / 'ctld'}",
            f"SlurmdSpoolDir={self.root / 'spool'}/%n",
            f"SlurmctldPidFile={run / 'slurmctld.pid'}",
            f"SlurmdPidFile={run / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={etc / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={dbd_port}",
            # Non-slurmdbd processes take the munge socket for *every* message
            # from AccountingStoragePass, not AuthInfo; point it at ours.
            f"AccountingStoragePass={self.munge_socket}",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            f"DefMemPerCPU={mem_per_cpu}",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "MinJobAge=10",
            "KillWait=5",
            "InactiveLimit=0",
            "Waittime=0",
            "JobRequeue=1",
            f"NodeName={self.node_name} NodeHostname={host} NodeAddr=127.0.0.1 {self._topology} "
            f"RealMemory={self.real_memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node_name} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    # ---------------------------------------------------------------- plumbing

    def _log_path(self, name: str) -> Path:
        path = self.root / "log" / f"{name}.log"
        self._logs[name] = path
        return path

    def _spawn(self, name: str, cmd: list[str], user: str | None = None, log: Path | None = None) -> None:
        """Start a daemon in the foreground as a background process, own session, stdout to a log."""
        out = self.root / "log" / f"{name}.out"
        self._logs.setdefault(name, log or out)
        if log is not None and log != out:
            self._logs[f"{name} (stdout)"] = out
        env = dict(os.environ, **self.env)
        env["PATH"] = env.get("PATH", "") + os.pathsep + os.pathsep.join(_EXTRA_PATH)
        key, value = self._marker.split("=", 1)
        env[key] = value
        with open(out, "wb") as fh:
            self._procs[name] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, user=user, cwd=str(self.root))

    def _wait(self, what: str, ready, proc: str | None = None, interval: float = 0.25) -> None:
        while True:
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            if proc is not None and self._procs[proc].poll() is not None:
                raise SlurmStartupError(
                    f"{proc} exited ({self._procs[proc].returncode}) while waiting for {what}:\n"
                    + self.log_tails())
            if time.monotonic() > self._deadline:
                raise SlurmStartupError(
                    f"timed out after {self.start_timeout_s:.0f}s waiting for {what}:\n" + self.log_tails())
            time.sleep(interval)

    def _kill_all(self) -> None:
        """SIGTERM then SIGKILL the daemons and everything they started.

        Job processes outlive slurmd (slurmstepd daemonizes), so the set is every
        process carrying this cluster's marker variable (daemons, slurmstepd)
        plus all their descendants, collected by pid -- never by name.
        """
        own = _ancestors(os.getpid())
        for sig, grace in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 3.0)):
            pids = self._cluster_pids() - own
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                for proc in self._procs.values():
                    proc.poll()  # reap
                if not (self._cluster_pids() - own):
                    break
                time.sleep(0.1)
        for proc in self._procs.values():
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass

    def _cluster_pids(self) -> set[int]:
        roots = {p.pid for p in self._procs.values() if p.poll() is None}
        roots |= _pids_with_env(self._marker)
        if self.conf is not None:
            # Job processes carry the submitter's SLURM_CONF; this catches them
            # even after their slurmstepd is gone.
            roots |= _pids_with_env(f"SLURM_CONF={self.conf}") - _ancestors(os.getpid())
        children = _children_map()
        found, stack = set(), list(roots)
        while stack:
            pid = stack.pop()
            if pid in found:
                continue
            found.add(pid)
            stack.extend(children.get(pid, []))
        return found


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running LocalSlurmCluster for the whole session (skips if Slurm can't be installed)."""
    cluster = LocalSlurmCluster()
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(f"no real Slurm for these tests: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
