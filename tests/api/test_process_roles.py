"""Process roles (``gridpatrol serve --role all``): the supervisor runs api, 2 ingest and 2
worker processes against the session's database, each role answers, ``kill -9`` of each role in
turn while devices post fixes loses no acknowledged fix, the other roles keep serving and the dead
one is restarted; Ctrl-C stops every child; a child that cannot start stops it all (exit 1); the
children die with a killed supervisor; an exclusive periodic job runs in one process at a time.

Servers run in their own session, output to a log file; every deadline is generous (polling)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest

from api.auth import SYSTEM
from api.db.cluster import free_port
from api.devices import DeviceIn, create_device
from api.protocols.jt808.terminal import Terminal
from api.roles import READY
from api.tasks import LOCK_NAMESPACE, AdvisoryLocks, Periodic, lock_key
from tests.api.protocols.test_jt808_server import new_phone
from tests.api.protocols.test_jt808_server_commands import TEXT, _terminal_online
from tests.conftest import run

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "roles"
DEADLINE_S = 120.0
LAT, LON = 43.93, 116.07  # 锡林浩特


def wait_for(what: str, check: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def role_children(supervisor: int) -> dict[str, list[int]]:
    """The live children of ``supervisor`` by role (from /proc: parent and command line)."""
    roles: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) != supervisor or state == "Z" or b"api.roles" not in argv:
            continue
        role = argv[argv.index(b"api.roles") + 1].decode()
        roles.setdefault(role, []).append(int(entry.name))
    return roles


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Cluster:
    """A supervisor process, its ports and its log."""

    proc: subprocess.Popen[bytes]
    log: Path
    api: int
    osmand: int
    jt808: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready_count(self, name: str) -> int:
        return self.text().count(f"[{name}] {READY}")

    def wait_ready(self, name: str) -> None:
        try:
            wait_for(f"{name} ready", lambda: self.ready_count(name))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the log ends:\n{self.text()[-3000:]}") from None

    def healthz(self) -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{self.api}/healthz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start(db_url: str, name: str, *, api_port: int | None = None, **env: str) -> Cluster:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    state = OUTPUT / f"{name}-state"
    state.mkdir(exist_ok=True)
    ports = {"api": api_port or free_port(), "osmand": free_port(), "jt808": free_port()}
    environment = {
        **os.environ,
        "DATABASE_URL": db_url,
        "GRIDPATROL_API_PORT": str(ports["api"]),
        "GRIDPATROL_OSMAND_PORT": str(ports["osmand"]),
        "GRIDPATROL_JT808_PORT": str(ports["jt808"]),
        "GRIDPATROL_API_STATE_DIR": str(state),
        "GRIDPATROL_API_CPU_WORKERS": "1",
        "GRIDPATROL_DB_POOL_MIN": "1",
        "GRIDPATROL_DB_POOL_MAX": "4",
        "GRIDPATROL_INGEST_RATE_PER_S": "0",
        "GRIDPATROL_COVERAGE_UPDATE_INTERVAL_S": "2",
        "GRIDPATROL_COVERAGE_CLAIM_STALE_S": "5",  # a killed worker's claims are retaken soon
        "GRIDPATROL_ROLES_RESTART_BACKOFF_S": "0.5",
        **env,
    }
    log = OUTPUT / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--role", "all"],
            env=environment,
            cwd=state,  # no .env from the working tree
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Cluster(proc, log, ports["api"], ports["osmand"], ports["jt808"])


async def _keyed_devices(url: str, n: int) -> list[tuple[int, str, str]]:
    out = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for i in range(n):
            identifier = f"roles-{os.getpid()}-{time.time_ns()}-{i}"
            row, _ = await create_device(conn, SYSTEM, DeviceIn(identifier=identifier))
            out.append((int(row["id"]), identifier, str(row["osmand_key"])))
    return out


@dataclass
class Poster:
    """Devices posting fixes over OsmAnd, each fix resent until it is acknowledged (200)."""

    port: int
    devices: list[tuple[int, str, str]]
    acked: set[tuple[int, int]] = field(default_factory=set)  # (device id, unix seconds)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        first = int(time.time()) - 3000
        for k, device in enumerate(self.devices):
            thread = threading.Thread(target=self._post, args=(device, first, k), daemon=True)
            thread.start()
            self._threads.append(thread)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _post(self, device: tuple[int, str, str], first: int, k: int) -> None:
        device_id, identifier, key = device
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            ts = first + n
            query = urlencode(
                {"id": identifier, "key": key, "lat": LAT + k * 0.01 + n * 1e-5, "lon": LON}
                | {"timestamp": ts, "speed": 5}
            )
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/?" + query)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None  # the process holding it died: reconnect, send the same fix again
                time.sleep(0.05)
                continue
            if response.status == 200:
                with self._lock:
                    self.acked.add((device_id, ts))
                n += 1
            else:
                self.refused += 1  # 503 while the database is busy: the device retries
            time.sleep(0.01)
        if conn is not None:
            conn.close()


def lock_holders(db: psycopg.Connection[Any], job: str) -> list[str]:
    rows = db.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s",
        (LOCK_NAMESPACE, lock_key(job)),
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(scope="module")
def roles(db_url: str) -> Iterator[Cluster]:
    cluster = start(
        db_url,
        "all",
        GRIDPATROL_ROLES_INGEST_PROCESSES="2",
        GRIDPATROL_ROLES_WORKER_PROCESSES="2",
    )
    try:
        for name in ("api", "ingest.1", "ingest.2", "worker.1", "worker.2"):
            cluster.wait_ready(name)
        yield cluster
    finally:
        cluster.stop()


def test_roles_answer_and_survive_kill_9_of_each(
    roles: Cluster, db_url: str, db: psycopg.Connection[Any]
) -> None:
    supervisor = roles.proc.pid
    children = role_children(supervisor)
    assert {k: len(v) for k, v in children.items()} == {"api": 1, "ingest": 2, "worker": 2}
    assert roles.healthz() == 200
    names = {r[0] for r in db.execute("SELECT application_name FROM pg_stat_activity").fetchall()}
    assert {"gridpatrol-api", "gridpatrol-ingest", "gridpatrol-worker"} <= names

    poster = Poster(roles.osmand, run(_keyed_devices(db_url, 4)))
    poster.start()
    observed: dict[str, Any] = {}  # what happened, for the record (test-output/roles)
    try:
        wait_for("fixes acknowledged", lambda: poster.count() >= 40)
        for role, name in (("ingest", "ingest.1"), ("worker", "worker.1"), ("api", "api")):
            before = role_children(supervisor)
            victim = before[role][0]
            readies = roles.text().count(f"{READY}: {role}")
            acked = poster.count()
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(f"{role} pid {victim} gone", lambda v=victim: not alive(v))
            # the others keep serving: fixes are acknowledged (by the other ingest process
            # when an ingest died), the API answers while an ingest or a worker is down
            wait_for(f"fixes acked after {role} died", lambda a=acked: poster.count() >= a + 20)
            if role != "api":
                assert roles.healthz() == 200
            # the supervisor restarts the dead one
            wait_for(
                f"{role} restarted\n{roles.text()[-3000:]}",
                lambda r=role, n=readies: roles.text().count(f"{READY}: {r}") > n,
            )
            observed[name] = {
                "seconds_to_ready_again": round(time.monotonic() - killed_at, 1),
                "fixes_acked_meanwhile": poster.count() - acked,
            }
            after = role_children(supervisor)
            assert len(after[role]) == len(before[role])
            assert victim not in after[role]
            assert f"[supervisor] {name} (pid {victim}) died" in roles.text()
        wait_for("the API back", lambda: roles.healthz() == 200)
        acked = poster.count()
        wait_for("fixes acked at the end", lambda: poster.count() >= acked + 20)
    finally:
        poster.stop()
    observed["fixes_acked"], observed["answers_not_200"] = poster.count(), poster.refused
    (OUTPUT / "fault.json").write_text(json.dumps(observed, indent=2) + "\n")

    # every acknowledged fix is stored exactly once
    ids = [d[0] for d in poster.devices]
    rows = db.execute(
        "SELECT device_id, extract(epoch FROM fix_time)::bigint, count(*) FROM position "
        "WHERE device_id = ANY(%s) GROUP BY 1, 2",
        (ids,),
    ).fetchall()
    stored = {(r[0], r[1]): r[2] for r in rows}
    assert poster.acked <= set(stored), sorted(poster.acked - set(stored))[:5]
    assert max(stored.values()) == 1

    # the workers computed coverage of those devices (the coverage job, every 2 s), the dead
    # worker's claims included: no mark of theirs is left, each has its device_day row
    wait_for(
        "coverage marks of the devices done",
        lambda: (
            db.execute(
                "SELECT count(*) FROM coverage_dirty WHERE device_id = ANY(%s)", (ids,)
            ).fetchone()
            == (0,)
        ),
    )
    days = db.execute(
        "SELECT count(DISTINCT device_id) FROM device_day WHERE device_id = ANY(%s)", (ids,)
    ).fetchone()
    assert days == (len(ids),)
    # each exclusive job is held by one process of the cluster (a worker here, unless the
    # session's in-process app took it first)
    for job in ("dispatch", "layouts", "partitions"):
        holders = wait_for(f"{job} lock held", lambda j=job: lock_holders(db, j))
        assert len(holders) == 1


async def _terminal_device(url: str, phone: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row, _ = await create_device(conn, SYSTEM, DeviceIn(identifier=f"roles-808-{phone}"))
        await conn.execute("UPDATE device SET jt808_phone = %s WHERE id = %s", (phone, row["id"]))
    return int(row["id"])


def test_808_commands_reach_the_ingest_process_holding_the_terminal(
    roles: Cluster, make_token: Any, db_url: str
) -> None:
    """The API process runs no 808 server: a command is relayed to whichever of the two ingest
    processes holds the terminal; the terminal list and counters come from both; a terminal no
    process holds is 409 terminal_offline (not 503)."""
    base = f"http://127.0.0.1:{roles.api}/api/v1/jt808"
    headers = {"Authorization": f"Bearer {make_token('dispatcher')}"}
    admin = {"Authorization": f"Bearer {make_token('admin')}"}
    phone = new_phone()
    device_id = run(_terminal_device(db_url, phone))
    offline_id = run(_terminal_device(db_url, new_phone()))
    with _terminal_online(roles.jt808, phone) as (background, terminal):
        sent = httpx.post(
            f"{base}/terminals/{device_id}/commands",
            json={"kind": "text", "text": TEXT},
            headers=headers,
            timeout=30,
        )
        assert sent.status_code == 202, sent.text
        command = sent.json()
        assert (command["device_id"], command["msg_id"]) == (device_id, 0x8300)
        wait_for("the text on the terminal", lambda: background(_texts(terminal)) == [TEXT])
        listed = httpx.get(f"{base}/terminals", headers=headers, timeout=30).json()
        assert [t["device_id"] for t in listed if t["device_id"] == device_id] == [device_id]
        # the terminal connects again until the kernel hands the connection to the other
        # ingest process: the older connection there is closed, one connection per terminal
        first = next(t["process"] for t in listed if t["device_id"] == device_id)
        crossed, extra = False, []
        for _ in range(12):  # each lands on either process (1 in 4,096 never crosses)
            again = Terminal(phone, host="127.0.0.1", port=roles.jt808)
            again.auth_code = terminal.auth_code
            extra.append(again)
            background(again.login())
            local = background(_local_address(again))
            held = wait_for(
                "the newest connection is the one held",
                lambda local=local: [
                    t
                    for t in httpx.get(f"{base}/terminals", headers=headers, timeout=30).json()
                    if t["device_id"] == device_id and t["peer"] == local
                ],
            )
            if held[0]["process"] != first:
                crossed = True
                break
        listed = httpx.get(f"{base}/terminals", headers=headers, timeout=30).json()
        for other in extra:
            background(other.close())
        assert crossed
        assert [t["peer"] for t in listed if t["device_id"] == device_id] == [local]
        stats = httpx.get(f"{base}/stats", headers=admin, timeout=30).json()
        assert stats["processes"] == 2  # both ingest processes answered
        assert stats["commands"]["sent 0x8300"] >= 1
        assert stats["events"]["replaced"] >= 1
    offline = httpx.post(
        f"{base}/terminals/{offline_id}/commands",
        json={"kind": "query_position"},
        headers=headers,
        timeout=30,
    )
    assert offline.status_code == 409, offline.text
    assert offline.json()["error"] == "terminal_offline"
    assert "ingest process" in offline.text


async def _texts(terminal: Terminal) -> list[str]:
    return list(terminal.texts)


async def _local_address(terminal: Terminal) -> str:
    host, port = terminal._writer.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
    return f"{host}:{port}"


def test_ctrl_c_stops_every_child(roles: Cluster) -> None:
    pids = [p for group in role_children(roles.proc.pid).values() for p in group]
    assert len(pids) == 5
    roles.proc.send_signal(signal.SIGINT)
    assert roles.proc.wait(timeout=60) == 0
    wait_for("every child stopped", lambda: not any(alive(p) for p in pids), timeout=30)
    assert "[supervisor] stopping" in roles.text()


def test_a_role_that_cannot_start_stops_all_and_children_die_with_the_supervisor(
    db_url: str,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        failing = start(db_url, "busy", api_port=busy.getsockname()[1])
        killed = start(db_url, "killed")
        try:
            assert failing.proc.wait(timeout=DEADLINE_S) == 1
            assert "[supervisor] api could not start" in failing.text()
            wait_for(
                "the busy cluster's children gone", lambda: not role_children(failing.proc.pid)
            )
            for name in ("api", "ingest", "worker"):
                killed.wait_ready(name)
            pids = [p for group in role_children(killed.proc.pid).values() for p in group]
            assert len(pids) == 3
            killed.proc.kill()  # SIGKILL: the supervisor cannot stop its children itself
            killed.proc.wait()
            wait_for("the orphans stopped", lambda: not any(alive(p) for p in pids), timeout=60)
        finally:
            failing.stop()
            killed.stop()


def test_an_exclusive_job_runs_in_one_process_at_a_time(db_url: str) -> None:
    """Two 'workers' (each its own lock connection) run the same exclusive job: never both at
    once; when the holder stops, the other takes the job over."""
    job = f"test-exclusive-{os.getpid()}-{time.time_ns()}"
    runs: list[tuple[str, float, float]] = []

    async def scenario() -> tuple[list[tuple[str, float, float]], int]:
        twenty, taken_over = asyncio.Event(), asyncio.Event()

        def recorder(who: str) -> Callable[[], Any]:
            async def work() -> None:
                began = time.monotonic()
                await asyncio.sleep(0.03)
                runs.append((who, began, time.monotonic()))
                if len(runs) >= 20:
                    twenty.set()
                if who == "second":
                    taken_over.set()

            return work

        first, second = Periodic(AdvisoryLocks(db_url)), Periodic(AdvisoryLocks(db_url))
        first.start(job, 0.01, recorder("first"), exclusive=True)
        await asyncio.sleep(0.2)  # the first takes the lock before the second asks
        second.start(job, 0.01, recorder("second"), exclusive=True)
        await asyncio.wait_for(twenty.wait(), 60)
        before = list(runs)
        await first.stop()  # its session ends: the lock is free
        await asyncio.wait_for(taken_over.wait(), 60)
        await second.stop()
        return before, len(runs)

    before, _ = run(scenario())
    assert {r[0] for r in before} == {"first"}  # the holder keeps the job
    assert {r[0] for r in runs} == {"first", "second"}  # … and the other took it over
    spans = sorted((r[1], r[2]) for r in runs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # never overlapping
