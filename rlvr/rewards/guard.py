"""Run a function that may hang (symbolic algebra on model output) with a hard time limit.

`signal.alarm`, which math-verify uses, works only in a process's main thread, and it cannot
stop a long computation inside C code (a huge integer power, say). A hard limit needs another
process: each call here goes to a long-lived worker process (`python -m rlvr.rewards.guard`)
over a pipe, and a worker that overruns its deadline is killed and replaced. This works from
any thread, inside a daemonic multiprocessing worker (plain subprocesses, not
`multiprocessing`), and after a fork, and the caller always gets an answer.

    pool = GuardedPool("/path/to/math_equiv.py:equivalent", workers=2, timeout=5.0)
    pool.map([(gold, answer, problem), ...])  -> [(value, error), ...]
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time


class WorkerStartError(RuntimeError):
    """No worker of a pool has ever started (a broken install, a target that cannot be imported).
    Every call would fail, so callers let this through rather than score each item 0."""


def _load(target: str):
    """"package.module:function", or "/path/to/file.py:function" (imported alone, without its
    package: a worker then loads only what that file imports)."""
    import importlib
    import importlib.util

    module, _, name = target.rpartition(":")
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"_guarded_{abs(hash(module))}", module)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module)
    return mod, getattr(mod, name)


class _Worker:
    def __init__(self, target: str, memory_mb: int):
        import tempfile

        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        self.stderr = tempfile.TemporaryFile()  # why a worker died, for the error message
        # this file run as a script (not as rlvr.rewards.guard: the package would import torch); -P: its folder,
        # which holds rewards/math.py, must not shadow the standard library's math on sys.path
        # the parent's pid, so the worker can tell when it is gone (a parent may itself be pid 1, in a
        # container); "main": only a worker started from the main thread may ask to die with its
        # parent's start thread (PR_SET_PDEATHSIG fires when that thread exits, not the process)
        lives_with = "main" if threading.current_thread() is threading.main_thread() else "thread"
        self.proc = subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__), target, str(memory_mb),
                                      str(os.getpid()), lives_with],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, bufsize=0)
        self.buffer = b""
        self.job: int | None = None  # index of the item in flight
        self.deadline = 0.0

    def send(self, job: int, args, timeout: float) -> None:
        self.job, self.deadline = job, time.monotonic() + timeout
        self.proc.stdin.write((json.dumps(args) + "\n").encode())

    def read_line(self) -> str | None:
        """A whole reply if one has arrived (non-blocking after select said readable), else None."""
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            raise EOFError
        self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def error_tail(self) -> str:
        try:
            self.stderr.seek(max(0, self.stderr.seek(0, os.SEEK_END) - 1500))  # long if the target prints
            return self.stderr.read().decode(errors="replace")
        except Exception:  # noqa: BLE001
            return ""


class GuardedPool:
    """Worker processes that call `target(*args)`; each call has `timeout` seconds, hard."""

    def __init__(self, target: str, workers: int = 1, timeout: float = 5.0, startup_timeout: float = 60.0,
                 memory_mb: int = 4096):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.target, self.n, self.timeout, self.startup_timeout = target, max(1, workers), timeout, startup_timeout
        self.memory_mb = memory_mb  # address-space limit of a worker: a runaway expansion fails, not the host
        self.failed_starts = 0  # workers in a row that died or hung before they could answer
        self.started = False  # has any worker of this pool ever answered its ping
        self.start_error = ""  # why the last worker that failed to start did
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()  # one map at a time; callers from several threads queue here
        self.pid = os.getpid()
        self.timeouts = 0  # calls killed at their deadline, since the pool started
        atexit.register(self.close)

    def _spawn(self) -> _Worker:
        try:
            w = _Worker(self.target, self.memory_mb)
        except OSError as e:  # no process at all (out of memory, no such interpreter)
            if self.started:
                raise
            raise WorkerStartError(f"{self.target}: cannot start a worker process: {e}") from e
        w.send(-1, None, self.startup_timeout)  # a ping: the first reply comes once imports are done
        return w

    def map(self, items: list[tuple]) -> list[tuple[object, str | None]]:
        """(value, None) or (None, "timeout" / "error: ...") for each argument tuple, in order."""
        with self.lock:
            if os.getpid() != self.pid:  # forked: the parent's pipes are not ours
                self.workers, self.pid = [], os.getpid()
            out: list[tuple[object, str | None] | None] = [None] * len(items)
            todo = list(range(len(items)))[::-1]
            while len(self.workers) < min(self.n, max(1, len(items))):
                self.workers.append(self._spawn())
            sel = selectors.DefaultSelector()
            for w in self.workers:
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            try:
                self._dispatch(sel, todo, items)
                while any(w.job is not None for w in self.workers):
                    now = time.monotonic()
                    wait = max(0.0, min(w.deadline for w in self.workers if w.job is not None) - now)
                    for key, _ in sel.select(timeout=wait):
                        w = key.data
                        try:
                            line = w.read_line()
                        except EOFError:  # the worker died (out of memory, a crash): always replace it
                            if w.job == -1:  # before its first answer: it cannot start at all
                                self._start_failed(w, "exited")
                            elif w.job is not None:
                                out[w.job] = (None, "error: worker exited")
                            self._replace(sel, w)
                            continue
                        if line is None:
                            continue
                        value, error = json.loads(line)
                        if w.job is not None and w.job >= 0:
                            out[w.job] = (value, error)
                        elif w.job == -1:
                            self.failed_starts, self.started = 0, True
                        w.job = None
                    now = time.monotonic()
                    for w in list(self.workers):
                        if w.job is not None and now >= w.deadline:
                            if w.job >= 0:
                                out[w.job] = (None, "timeout")
                                self.timeouts += 1
                            else:  # hung while importing
                                self._start_failed(w, f"hung for {self.startup_timeout:g} s")
                            self._replace(sel, w)
                    if self.failed_starts >= 3:  # it ran before: fail what is left of this call, try again next call
                        self._abandon(out, todo, f"error: workers cannot restart: ...{self.start_error[-200:]}")
                    self._dispatch(sel, todo, items)
            except BaseException:  # a worker still busy would answer an item of this call in the next one
                for w in [w for w in self.workers if w.job is not None]:
                    w.kill()
                    self.workers.remove(w)
                raise
            finally:
                sel.close()
            return out  # type: ignore[return-value]

    def _start_failed(self, w: _Worker, how: str) -> None:
        """A worker that died or hung before its first reply. Three in a row, and no worker of this
        pool has ever started: raise, since every call would fail (a broken install: the run must
        stop, not train on rewards of 0). A pool that did run (a crash, memory pressure mid-run)
        fails the rest of this call instead (see `map`): each item is an error the caller counts,
        and the next call tries again."""
        self.failed_starts += 1
        self.start_error = (f"{self.target}: the worker processes could not start (3 in a row; the last one {how} "
                            f"before its first reply). Its stderr:\n{w.error_tail()}")
        if self.failed_starts >= 3 and not self.started:
            raise WorkerStartError(self.start_error) from None

    def _abandon(self, out: list, todo: list[int], error: str) -> None:
        """Every item not yet answered fails with `error`; no worker is left busy."""
        for w in [w for w in self.workers if w.job is not None]:
            if w.job >= 0:
                out[w.job] = (None, error)
            w.kill()
            w.stderr.close()
            self.workers.remove(w)
        for i in todo:
            out[i] = (None, error)
        todo.clear()
        self.failed_starts = 0

    def _dispatch(self, sel, todo: list[int], items: list[tuple]) -> None:
        """Give every idle worker the next item. A worker whose pipe is broken (it died between
        calls) is replaced, and the item goes to the queue again."""
        for w in list(self.workers):
            if w.job is None and todo:
                i = todo.pop()
                try:
                    w.send(i, list(items[i]), self.timeout)
                except OSError:  # BrokenPipeError: the worker is gone
                    todo.append(i)
                    self._replace(sel, w)

    def _replace(self, sel, w: _Worker) -> None:
        sel.unregister(w.proc.stdout)
        w.kill()
        w.stderr.close()
        fresh = self._spawn()
        self.workers[self.workers.index(w)] = fresh
        sel.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)

    def close(self) -> None:
        for w in self.workers:
            w.kill()
            w.stderr.close()
        self.workers = []


def _serve(target: str, memory_mb: int, parent: int | None = None, lives_with: str = "thread") -> None:
    import resource

    if parent is not None:
        if lives_with == "main" and sys.platform.startswith("linux"):  # die with the parent even mid-computation
            import ctypes
            import signal

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent is already gone (reparented)
            return

        def watch() -> None:  # otherwise: an orphan ends at once, even when no input is coming
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # replies go out on a private copy of the stdout pipe; fd 1 and sys.stdout become stderr, so what the target
    # prints (a library's warning, a C extension's printf) cannot break the reply protocol
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    module, fn = _load(target)
    if hasattr(module, "warmup"):  # heavy imports now, before the first call's time limit starts
        module.warmup()
    for raw in sys.stdin.buffer:
        args = json.loads(raw)
        if args is None:
            reply = [None, None]  # ping
        else:
            try:
                reply = [fn(*args), None]
            except Exception as e:  # noqa: BLE001 - reported to the caller, the worker lives on
                reply = [None, f"error: {type(e).__name__}: {e}"[:300]]
        out.write((json.dumps(reply) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4096,
           int(sys.argv[3]) if len(sys.argv) > 3 else None, sys.argv[4] if len(sys.argv) > 4 else "thread")
