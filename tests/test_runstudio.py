"""`manage.py runstudio` (what `make run` calls) as a creator meets it: real processes on a
temporary SQLite database. It keeps both parts running, stops everything quickly and
completely, and keeps its console to what a creator needs.

Finding each process relies on /proc, so these tests run on Linux only."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from studio.management.commands.runstudio import Backoff

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")


@pytest.fixture(scope="module")
def studio_env(tmp_path_factory):
    base = tmp_path_factory.mktemp("runstudio")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{base / 'studio.sqlite3'}",
        "MEDIA_ROOT": str(base / "media"),
        "SECRET_KEY": "runstudio-test-secret-key-not-for-production",
        "STUDIO_IGNORE_DOTENV": "1",
        "SIMULATOR_DELAY_SECONDS": "0",
        "POLL_SWEEP_SECONDS": "60",
        "PICTORY_API_KEY": "",
        "OPENROUTER_API_KEY": "",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("LOG_FILE", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return env


def processes():
    """{pid: (ppid, pgid, state)} of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            found[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def cmdline(pid) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid):
    table = processes()
    family, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (ppid, _, _) in table.items() if ppid in frontier} - family
        family |= frontier
    return family


def living_in_groups(pgids):
    """Processes of these groups that have not ended (zombies have)."""
    return [pid for pid, (_, pgid, state) in processes().items() if pgid in pgids and state != "Z"]


def living(pids):
    """Those of these processes that have not ended (zombies have)."""
    table = processes()
    return [pid for pid in pids if pid in table and table[pid][2] != "Z"]


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class RunStudio:
    """runstudio started the way a terminal starts `make run`: in a process group of its own
    (the terminal's foreground group), console captured to a file."""

    def __init__(self, env, tmp_path, port=None, extra_env=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "studio.log"
        self.console_path = tmp_path / "console.txt"
        self.env = {**env, "LOG_FILE": str(self.log_path), **(extra_env or {})}
        self.console = open(self.console_path, "w")
        self.seen = set()  # every process of this studio seen so far, to clean up after
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runstudio", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.console_path.read_text()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_until_ready(self):
        """The address is shown and the worker cluster is up with its children."""
        wait_for(lambda: "running at" in self.output() or self.process.poll() is not None, 20, "the address")
        assert self.process.poll() is None, self.output() + self.log()
        wait_for(lambda: " running." in self.log() + self.output(), 20, "the worker cluster")
        # Let the cluster settle into its guard loop: a SIGTERM reaching every process of a
        # cluster only makes django-q2 hang from about 0.5 s after "running." on.
        time.sleep(1)
        self.seen |= descendants(self.process.pid)
        return self

    def part(self, name):
        """The pid of runstudio's child that runs `manage.py <name>`."""

        def find():
            children = [pid for pid, (ppid, _, state) in processes().items() if ppid == self.process.pid]
            return next((pid for pid in children if f"manage.py {name}" in cmdline(pid)), None)

        pid = wait_for(find, 10, f"the {name} process")
        self.seen |= {pid} | descendants(pid)
        return pid

    def groups(self):
        table = processes()
        return {table[pid][1] for pid in descendants(self.process.pid) | {self.process.pid} if pid in table}

    def close(self):
        """Stop the studio if a test left it running; kill whatever a failed test left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in living(self.seen):
            if "manage.py" in cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        self.console.close()


@pytest.fixture
def run_studio(studio_env, tmp_path):
    started = []

    def start(**kwargs):
        studio = RunStudio(studio_env, tmp_path, **kwargs)
        started.append(studio)
        return studio

    yield start
    for studio in started:
        studio.close()


# --- restart delays -------------------------------------------------------------------------


def test_restart_delays_double_after_quick_failures_up_to_a_cap():
    backoff = Backoff(first=1, cap=30, stable=60)
    assert [backoff.delay_after(ran_for=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_restart_delays_start_over_after_a_stable_run():
    backoff = Backoff(first=1, cap=30, stable=60)
    for _ in range(4):
        backoff.delay_after(ran_for=2)
    assert backoff.delay_after(ran_for=61) == 1
    assert backoff.delay_after(ran_for=2) == 2


# --- supervision ----------------------------------------------------------------------------


class HealthWatch(threading.Thread):
    """Asks /healthz every 50 ms and records every failed answer."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.failures, self.answers, self.done = url, [], 0, threading.Event()

    def run(self):
        with httpx.Client(timeout=2) as client:
            while not self.done.is_set():
                try:
                    assert client.get(self.url + "/healthz").status_code == 200
                    self.answers += 1
                except (httpx.HTTPError, AssertionError) as error:
                    self.failures.append(repr(error))
                time.sleep(0.05)


@needs_proc
def test_a_killed_worker_is_restarted_while_the_web_server_keeps_answering(run_studio):
    studio = run_studio().wait_until_ready()
    web = studio.part("runserver")
    worker = studio.part("qcluster")
    watch = HealthWatch(studio.url)
    watch.start()
    try:
        killed_at = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        restarted = wait_for(lambda: (pid := studio.part("qcluster")) != worker and pid, 10, "a new worker")
        restart_took = time.monotonic() - killed_at
        wait_for(lambda: studio.log().count(" running.") >= 2, 15, "the new cluster to run")
    finally:
        watch.done.set()
        watch.join()
    assert 1 <= restart_took < 5, restart_took
    assert watch.failures == [] and watch.answers > 10
    assert studio.part("runserver") == web, "the web server was restarted too"
    assert restarted != worker
    # The killed cluster's own children were orphaned: they must not keep taking tasks.
    assert living_in_groups({worker}) == []
    assert "The background worker stopped; restarting it in 1 s." in studio.output()
    assert "restarting it in 1 s" in studio.log()


@needs_proc
def test_a_killed_web_server_is_restarted(run_studio):
    studio = run_studio().wait_until_ready()
    web = studio.part("runserver")
    worker = studio.part("qcluster")
    os.kill(web, signal.SIGKILL)
    wait_for(lambda: "The web server stopped; restarting it in 1 s." in studio.output(), 5, "the notice")
    restarted = wait_for(lambda: (pid := studio.part("runserver")) != web and pid, 10, "a new web server")

    def answers():
        try:
            return httpx.get(studio.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 10, "the new web server to answer")
    assert studio.part("runserver") == restarted
    assert studio.part("qcluster") == worker, "the worker was restarted too"


# --- stopping -------------------------------------------------------------------------------


@needs_proc
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigterm-to-group"])
def test_a_stop_signal_ends_every_process_within_5_s(run_studio, how):
    studio = run_studio().wait_until_ready()
    groups = studio.groups()
    assert len(living_in_groups(groups)) >= 4, "the worker cluster has its children"
    started = time.monotonic()
    if how == "ctrl-c":  # the terminal signals its whole foreground group
        os.killpg(studio.process.pid, signal.SIGINT)
    elif how == "sigterm":  # a service manager
        studio.process.send_signal(signal.SIGTERM)
    else:  # `kill -- -PGID`, as the browser tests used to stop the studio
        os.killpg(studio.process.pid, signal.SIGTERM)
    studio.process.wait(30)
    took = time.monotonic() - started
    assert took < 5, took
    assert living_in_groups(groups) == []
    assert studio.output().rstrip().endswith("Lastframe Studio stopped.")
    assert studio.process.returncode == 0


@needs_proc
def test_a_worker_busy_with_a_long_task_is_still_stopped_within_5_s(run_studio, studio_env, tmp_path):
    # A database of its own, so the unfinished task never reaches another test's worker.
    database = tmp_path / "busy.sqlite3"
    shutil.copy(studio_env["DATABASE_URL"].removeprefix("sqlite:///"), database)
    studio = run_studio(extra_env={"DATABASE_URL": f"sqlite:///{database}"}).wait_until_ready()
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django_q.tasks import async_task; async_task('time.sleep', 60)",
        ],
        cwd=ROOT,
        env=studio.env,
        check=True,
        capture_output=True,
    )
    # A worker process picks the task up (django-q2 logs it as "processing").
    wait_for(lambda: "processing" in studio.log() + studio.output(), 10, "the worker to take the task")
    groups = studio.groups()
    started = time.monotonic()
    os.killpg(studio.process.pid, signal.SIGINT)
    studio.process.wait(10)
    took = time.monotonic() - started
    assert took < 5, f"{took:.2f} s; the log says when each step happened:\n{studio.log()[-3000:]}"
    assert living_in_groups(groups) == []
    assert "did not stop in time" in studio.log()


@needs_proc
def test_the_parts_stop_when_runstudio_itself_is_killed(run_studio):
    studio = run_studio().wait_until_ready()
    family = descendants(studio.process.pid)
    assert len(family) >= 6, "web server, worker cluster and its children"
    os.kill(studio.process.pid, signal.SIGKILL)
    studio.process.wait(5)
    wait_for(lambda: living(family) == [], 5, "the orphaned parts to stop")


# --- the console ----------------------------------------------------------------------------


@needs_proc
def test_the_console_shows_the_address_and_how_to_stop_and_the_rest_goes_to_the_log(run_studio):
    studio = run_studio().wait_until_ready()
    httpx.get(studio.url + "/healthz", timeout=5)
    output = studio.output()
    assert f"Lastframe Studio is running at http://127.0.0.1:{studio.port}/" in output
    assert "Press Ctrl-C to stop it." in output
    assert str(studio.log_path) in output
    for developer_text in ("development server", "Django version", "Q Cluster", "Warning", "GET /"):
        assert developer_text not in output
    log = studio.log()
    assert "WARNING: This is a development server." in log
    assert "Q Cluster" in log and '"GET /healthz HTTP/1.1" 200' in log


@needs_proc
def test_a_taken_port_is_said_plainly(run_studio):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        studio = run_studio(port=port)
        studio.process.wait(15)
    output = studio.output()
    assert studio.process.returncode == 1
    assert f"Port {port} is already in use" in output and f"make run PORT={port + 1}" in output
    assert "Traceback" not in output
