"""Load check, loopback only and bounded: a studio started as `make run` starts it (runstudio:
web server and worker, supervised) with the offline simulator, then
  1. parallel gallery loads (THREADS clients at once),
  2. a burst of BURST generations sent at once, gallery loads going on meanwhile,
  3. the worker killed (SIGKILL) while the burst is being sent: runstudio restarts it,
and it reports clips lost (accepted by the studio, no row: must be 0), submitted twice (a
clip the simulator received more than once: 0), stuck (not finished when the script stops
waiting: 0), and the p50/p95 page time of each phase.

Run: .venv/bin/python bench/load.py   Everything runs on 127.0.0.1 in a temporary folder,
removed afterwards; every loop has a count and the whole run a deadline (DEADLINE_SECONDS).
"""

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
THREADS = 8
LOADS_PER_THREAD = 25
BURST = 30
DEADLINE_SECONDS = 420  # the whole run; a clip cut off mid-send is settled after 3 min
PASSWORD = "load-test-password-42"
FINAL = ("ready", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


class Studio:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = base / "studio.sqlite3"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "MEDIA_ROOT": str(base / "media"),
            "STUDIO_CACHE_DIR": str(base / "cache"),
            "SECRET_KEY": "load-test-only",
            "SIMULATOR_DELAY_SECONDS": "0.5",
            "STUDIO_IGNORE_DOTENV": "1",
            "PICTORY_API_KEY": "",
            "OPENROUTER_API_KEY": "",
            "LOG_FILE": str(base / "studio.log"),
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.console = open(base / "console.log", "w")
        self.process = None

    def manage(self, *args):
        subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, check=True, stdout=self.console,
            stderr=subprocess.STDOUT, timeout=180,
        )  # fmt: skip

    def start(self):
        self.manage("migrate", "--noinput")
        self.manage("createsuperuser", "--noinput", "--username", "ana", "--email", "ana@example.com")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runstudio", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self.console, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the studio did not start; see " + str(self.base / "studio.log"))

    def worker_pid(self) -> int | None:
        """The qcluster leader runstudio started (its child whose command says qcluster)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid and b"qcluster" in cmdline:
                return int(entry.name)
        return None

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.console.close()

    def rows(self, sql, params=()):
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=20) as db:
            return db.execute(sql, params).fetchall()


def signed_in(studio) -> httpx.Client:
    client = httpx.Client(base_url=studio.url, timeout=30)
    client.get("/accounts/login/")
    token = client.cookies["csrftoken"]
    answer = client.post(
        "/accounts/login/", data={"username": "ana", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert answer.status_code == 302, answer.status_code
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    return client


def gallery_loads(studio, times, count, errors):
    client = signed_in(studio)
    for _ in range(count):
        start = time.perf_counter()
        response = client.get("/")
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            errors.append(response.status_code)
    client.close()


def parallel_loads(studio, threads=THREADS, count=LOADS_PER_THREAD):
    times, errors = [], []
    workers = [
        threading.Thread(target=gallery_loads, args=(studio, times, count, errors)) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    return workers, times, errors


def generate(studio, n, accepted, refused):
    client = signed_in(studio)
    data = {
        "model": "simulator:cinema",
        "prompt": f"Load clip {n}: a lantern drifting over a dark harbour",
        "aspect_ratio": "16:9",
        "duration": "4",
        "start_mode": "text",
    }
    response = client.post("/generate/", data=data)
    found = re.search(r"#clip-(\d+)", response.headers.get("location", ""))
    (
        accepted.append(int(found.group(1)))
        if response.status_code == 302 and found
        else refused.append(response.status_code)
    )
    client.close()


def main():
    base = Path(tempfile.mkdtemp(prefix="lastframe-load-"))
    studio = Studio(base)
    started = time.monotonic()
    try:
        studio.start()
        print(
            f"studio on {studio.url} (runstudio: web server + worker), simulator only, {os.cpu_count()} cores"
        )

        workers, quiet, errors = parallel_loads(studio)
        for w in workers:
            w.join(120)
        print(f"gallery, {THREADS} clients x {LOADS_PER_THREAD} loads: p50 {statistics.median(quiet):.0f} ms, "
              f"p95 {percentile(quiet, 0.95):.0f} ms, errors {len(errors)}")  # fmt: skip

        accepted, refused = [], []
        loaders, busy, busy_errors = parallel_loads(studio, threads=4, count=20)
        senders = [
            threading.Thread(target=generate, args=(studio, n, accepted, refused)) for n in range(BURST)
        ]
        for s in senders:
            s.start()
        # Kill the worker while the burst is being sent, once some clips are on their way.
        while time.monotonic() - started < DEADLINE_SECONDS and not studio.rows(
            "SELECT 1 FROM studio_clip WHERE status IN ('submitting', 'running') LIMIT 1"
        ):
            time.sleep(0.05)
        victim = studio.worker_pid()
        if victim:
            os.kill(victim, signal.SIGKILL)
        print(f"killed the worker (pid {victim}) with {len(accepted)} of {BURST} generations answered")
        for s in senders + loaders:
            s.join(120)
        restarted = None
        while time.monotonic() - started < DEADLINE_SECONDS:
            restarted = studio.worker_pid()
            if restarted and restarted != victim:
                break
            time.sleep(0.2)
        print(f"the supervisor started a new worker (pid {restarted})")
        print(f"gallery during the burst, 4 clients x 20 loads: p50 {statistics.median(busy):.0f} ms, "
              f"p95 {percentile(busy, 0.95):.0f} ms, errors {len(busy_errors)}")  # fmt: skip

        while time.monotonic() - started < DEADLINE_SECONDS:
            left = studio.rows(f"SELECT COUNT(*) FROM studio_clip WHERE status NOT IN {FINAL}")[0][0]
            if not left:
                break
            time.sleep(1)
        states = dict(studio.rows("SELECT status, COUNT(*) FROM studio_clip GROUP BY status"))
        rows = {pk for (pk,) in studio.rows("SELECT id FROM studio_clip")}
        lost = [pk for pk in accepted if pk not in rows]
        stuck = studio.rows(f"SELECT id, status FROM studio_clip WHERE status NOT IN {FINAL}")
        # What the simulated service received: one job folder per submission, with its prompt.
        sent = {}
        for job in (base / "media" / "simulator").glob("*/job.json"):
            prompt = json.loads(job.read_text())["prompt"]
            sent[prompt] = sent.get(prompt, 0) + 1
        twice = {prompt: n for prompt, n in sent.items() if n > 1}
        uncertain = studio.rows("SELECT COUNT(*) FROM studio_clip WHERE failure_kind = 'uncertain'")[0][0]
        print(f"generations: {len(accepted)} accepted, {len(refused)} refused {refused or ''}")
        print(f"clips by status: {states}; 'may have started' (the worker died while sending): {uncertain}")
        print(f"clips lost: {len(lost)}")
        print(f"submitted twice: {len(twice)}")
        print(f"stuck: {len(stuck)} {stuck or ''}")
        print(f"whole run: {time.monotonic() - started:.0f} s")
        return 0 if not lost and not twice and not stuck else 1
    finally:
        studio.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
