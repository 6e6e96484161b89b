"""``gridpatrol serve --role all``: the roles as child processes, watched.

Each child is ``python -m api.roles ROLE`` in a process group of its own (a Ctrl-C at
the terminal reaches only the supervisor, which stops the children in order), with the database
URL in its environment (it neither starts a cluster nor migrates) and its output on the console
line by line with a ``[role]`` prefix. A child is up once it prints ``api.roles.READY``.

- A child that exits before it was ever up (a busy port, a bad setting), or is not up within
  ``GRIDPATROL_ROLES_START_TIMEOUT_S``: everything is stopped and the supervisor exits 1.
- A child that dies later is restarted after ``RESTART_BACKOFF_S``, doubling per death that
  follows a short life, up to ``RESTART_BACKOFF_MAX_S``; whatever it left in its process group
  (the API's CPU pool) is killed first.
- SIGINT / SIGTERM: SIGTERM to every child, SIGKILL to the groups of those still running after
  ``STOP_TIMEOUT_S``; the supervisor exits 0.
- The supervisor killed outright: each child gets SIGTERM from the kernel
  (``PR_SET_PDEATHSIG``, ``api.roles.process.die_with_supervisor``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from api.roles import API, INGEST, READY, SUPERVISOR_ENV, WORKER
from api.settings import RolesSettings

log = logging.getLogger("gridpatrol.supervisor")
HEALTHY_S = 30.0  # a child that lived this long died of something new: backoff starts over


@dataclass
class Child:
    """One role process and its restart state."""

    name: str  # "api", "ingest.1", …
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    up: threading.Event = field(default_factory=threading.Event)
    ever_up: bool = False
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None
    pump: threading.Thread | None = None  # copies its output to the console


class Supervisor:
    """Start, watch, restart and stop the role processes (see the module docstring)."""

    def __init__(
        self,
        settings: RolesSettings,
        env: dict[str, str],
        *,
        api_args: Sequence[str] = (),
        extra: Sequence[tuple[str, list[str]]] = (),
        out: IO[str] | None = None,
    ) -> None:
        self.settings = settings
        self.env = {**env, SUPERVISOR_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        self.out = out or sys.stdout
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        base = [sys.executable, "-m", "api.roles"]  # not the CLI: see api.roles.process
        self.children = [
            *(
                Child(f"{INGEST}.{i + 1}" if settings.ingest_processes > 1 else INGEST,
                      [*base, INGEST])
                for i in range(settings.ingest_processes)
            ),
            *(
                Child(f"{WORKER}.{i + 1}" if settings.worker_processes > 1 else WORKER,
                      [*base, WORKER])
                for i in range(settings.worker_processes)
            ),
            Child(API, [*base, API, *api_args]),
            # beside the roles, watched the same way (gridpatrol run: the living demo's fleet)
            *(Child(name, [sys.executable, *argv]) for name, argv in extra),
        ]  # fmt: skip

    # ---- output ------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        with self._print_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        prefix = f"[{child.name}] "
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(READY):
                child.up.set()
            self.say(prefix + line)
        stream.close()

    # ---- children ----------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        child.up.clear()
        child.restart_at = None
        child.proc = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group; the terminal's Ctrl-C is ours
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None  # noqa: S101 - piped above
        child.pump = threading.Thread(
            target=self._pump, args=(child, child.proc.stdout), daemon=True, name=child.name
        )
        child.pump.start()

    @staticmethod
    def _kill_group(child: Child) -> None:
        """SIGKILL whatever is left in the child's process group (it may be gone already)."""
        if child.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        self._stop.set()

    def run(self) -> int:
        """Supervise until a signal (0) or a child that cannot start (1)."""
        previous = {
            s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in self.children:
                self._spawn(child)
            status = self._watch()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return status

    def _watch(self) -> int:
        s = self.settings
        while not self._stop.is_set():
            now = time.monotonic()
            for child in self.children:
                proc = child.proc
                assert proc is not None  # noqa: S101 - spawned
                if child.up.is_set() and not child.ever_up:
                    child.ever_up = True
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restarts += 1
                        self.say(f"[supervisor] restarting {child.name} (restart {child.restarts})")
                        self._spawn(child)
                    continue
                code = proc.poll()
                if code is None:
                    if not child.ever_up and now - child.started_at > s.start_timeout_s:
                        self.say(
                            f"[supervisor] {child.name} not ready within "
                            f"{s.start_timeout_s:.0f} s; stopping everything"
                        )
                        return 1
                    continue
                self._kill_group(child)
                if child.pump is not None:  # its last lines (a "ready" among them) are read
                    child.pump.join(timeout=2)
                child.ever_up = child.ever_up or child.up.is_set()
                if not child.ever_up:
                    self.say(
                        f"[supervisor] {child.name} could not start (exit status {code}); "
                        "stopping everything"
                    )
                    return 1
                lived = now - child.started_at
                child.backoff_s = (
                    s.restart_backoff_s
                    if lived >= HEALTHY_S or child.backoff_s == 0
                    else min(child.backoff_s * 2, s.restart_backoff_max_s)
                )
                child.restart_at = now + child.backoff_s
                self.say(
                    f"[supervisor] {child.name} (pid {proc.pid}) died (exit status {code}) "
                    f"after {lived:.0f} s; restarting in {child.backoff_s:.0f} s"
                )
            self._stop.wait(0.1)
        return 0

    def _stop_all(self) -> None:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        if live:
            self.say(f"[supervisor] stopping {', '.join(c.name for c in live)}")
        for child in live:
            assert child.proc is not None  # noqa: S101 - live
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for child in live:
            assert child.proc is not None  # noqa: S101 - live
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"[supervisor] {child.name} did not stop; killing it")
        for child in self.children:
            self._kill_group(child)
            if child.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)
