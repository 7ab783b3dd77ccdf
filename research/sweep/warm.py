"""A warm worker for the local executor: imports JAX, Flax, optax, orbax and the harness once,
then forks one child process per trial.

Each trial still runs in its own process, exactly the command a fresh process would run
(`scaling sweep trial DIR`, through `research.cli.main`): its own pid, its own `.lock`, its
stdout and stderr appended to its own train.log, resume from its own checkpoints. A crash or
SIGKILL of one trial touches no other; only the interpreter start and the imports (about
1-2 s a trial on 2 CPU cores) are shared. JAX's backend is never started in the worker (the
children start their own), which is what makes forking it safe.

Protocol, one JSON object per line:
    runner -> worker (stdin)   {"trial_dir": DIR, "log": PATH, "env": {NAME: VALUE}}
    worker -> runner (stdout)  {"ready": true}, then per request {"started": DIR, "pid": PID},
                               per child that ends {"exited": PID, "code": C}
                               (C as Popen's returncode: negative = killed by that signal)
A worker that dies (killed, out of memory) is replaced by the runner with a new one; the
trials it was running are reported as ended with code None, and the runner treats that as
a failed attempt (retried like any other).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

PRELOAD = ("jax", "jax.numpy", "flax.nnx", "optax", "orbax.checkpoint", "numpy",
           "research.cli", "research.data", "research.train.loop", "research.train.step",
           "research.train.checkpoint", "research.sweep.trial", "research.sweep.cli")



def popen_python(argv: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen for a child that execs a fresh Python at once. JAX, once imported (the sweep's
    fit runs before a validation rung), warns at every os.fork() that forking multithreaded code may
    deadlock; that applies to a child that keeps running the parent's code, not to fork-then-exec, so
    the warning is silenced for this call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        return subprocess.Popen(argv, **kwargs)

def _pdeathsig(sig: int) -> None:
    """Receive `sig` when the parent dies, even by SIGKILL (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ---------------------------------------------------------------- the worker process

def _child(request: dict, main) -> None:
    """In the forked child: become `scaling sweep trial DIR` with its log as stdout and stderr."""
    code = 1
    try:
        _pdeathsig(signal.SIGTERM)  # the worker dying (the runner dying) stops the trial, checkpointed
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        os.environ.update(request.get("env") or {})
        code = main(["sweep", "trial", request["trial_dir"]])
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # the child must never return into the worker's loop
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def serve(main) -> None:
    """The worker: preload, then fork a child per request and report every exit; each child runs
    `main(["sweep", "trial", DIR])` (the `scaling` command's main, passed in by the entry point below)."""
    _pdeathsig(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    for name in PRELOAD:
        importlib.import_module(name)
    _send({"ready": True})
    children: set[int] = set()
    buffer = b""
    stdin_open = True
    while stdin_open or children:
        ready, _, _ = select.select([0] if stdin_open else [], [], [], 0.05)
        if ready:
            chunk = os.read(0, 65536)
            if not chunk:
                stdin_open = False  # the runner is done (or gone): finish the children, then exit
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, main)
                children.add(pid)
                _send({"started": request["trial_dir"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            _send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


# ---------------------------------------------------------------- the runner's side

class WarmProcess:
    """What the runner holds for a trial running in the warm worker: Popen's poll / wait /
    send_signal / returncode / pid."""

    def __init__(self, worker: "WarmWorker", pid: int):
        self.worker, self.pid, self.returncode = worker, pid, None

    def poll(self):
        self.worker.pump()
        return self.returncode

    def wait(self):
        while self.poll() is None:
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class WarmWorker:
    """Starts the worker process and hands it trials; replaces it when it dies."""

    def __init__(self, env: dict | None = None, start_timeout: float = 600.0):
        self.env, self.start_timeout = env, start_timeout
        self.proc: subprocess.Popen | None = None
        self.running: dict[int, WarmProcess] = {}
        self.started = 0  # worker processes started; all but the first replaced one that died

    @property
    def replaced(self) -> int:
        return max(0, self.started - 1)

    def _start(self) -> None:
        self.started += 1
        self.proc = popen_python([sys.executable, "-m", "research.sweep.warm"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, env=self.env, preexec_fn=lambda: _pdeathsig(signal.SIGTERM))
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout, self._lines), daemon=True).start()
        message = self._next(self.start_timeout)
        if not message or not message.get("ready"):
            raise RuntimeError(f"the warm worker did not start (exit code {self.proc.poll()})")

    @staticmethod
    def _read(stream, lines: queue.Queue) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:  # something printed by a library on import: not ours
                continue
            if isinstance(message, dict):
                lines.put(message)
        lines.put(None)  # the worker is gone

    def _next(self, timeout: float | None) -> dict | None:
        """The next message that is not an exit report (those are applied as they come)."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            try:
                message = self._lines.get(timeout=None if deadline is None else max(0.0, deadline - time.time()))
            except queue.Empty:
                return None
            if message is None:
                self._worker_died()
                return None
            if "exited" in message:
                self._exited(message["exited"], message["code"])
                continue
            return message

    def _exited(self, pid: int, code) -> None:
        handle = self.running.pop(pid, None)
        if handle is not None:
            handle.returncode = code

    def _worker_died(self) -> None:
        """Its children got SIGTERM (PDEATHSIG) and checkpoint; report them ended once gone."""
        for pid, handle in list(self.running.items()):
            while _alive(pid):
                time.sleep(0.05)
            self.running.pop(pid)
            handle.returncode = WORKER_DIED
        self.proc = None

    def pump(self) -> None:
        """Apply every exit report received so far."""
        if self.proc is None:
            return
        while True:
            try:
                message = self._lines.get_nowait()
            except queue.Empty:
                return
            if message is None:
                self._worker_died()
                return
            if "exited" in message:
                self._exited(message["exited"], message["code"])

    def launch(self, trial_dir: Path, log: Path, env: dict[str, str]) -> WarmProcess:
        if self.proc is not None and self.proc.poll() is not None:  # died since we last looked
            self.pump()
            if self.proc is not None:
                self._worker_died()
        if self.proc is None:
            self._start()
        self.proc.stdin.write((json.dumps({"trial_dir": str(trial_dir), "log": str(log), "env": env}) + "\n").encode())
        self.proc.stdin.flush()
        message = self._next(self.start_timeout)
        if not message or message.get("started") != str(trial_dir):
            raise RuntimeError(f"the warm worker did not start trial {trial_dir.name}")
        handle = WarmProcess(self, message["pid"])
        self.running[handle.pid] = handle
        return handle

    def close(self) -> None:
        """Let the worker finish (its children are waited for by the caller first) and exit."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.pump()
        self.proc = None


WORKER_DIED = -signal.SIGKILL  # the exit code reported for a trial whose worker died under it


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps, as under a container's bare PID 1, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


if __name__ == "__main__":  # the worker process: `python -m research.sweep.warm`
    from research.cli import main  # the program it runs (an entry point, not a dependency of the sweep layer)

    serve(main)
