"""Start the web server and the background worker together and keep them running: what
`make run` calls.

The console shows only what a creator needs: the address once the studio answers, how to
stop it, a line when a part had to be restarted, and errors they must act on. Everything
else the two parts print (the development-server warning, request lines, the worker's
chatter, Python warnings) goes to a log file named in that message.

How the processes are arranged, and why:
- Each part runs in a session (and so a process group) of its own. A terminal's Ctrl-C
  then reaches runstudio alone. django-q2's children must not get the signal directly:
  when every process of the cluster receives SIGTERM at once, the cluster lingers for a
  minute or more instead of stopping in under a second (NOTES.md; measured again here).
- To stop, runstudio sends SIGTERM to each part's leading process only, waits up to
  STOP_GRACE_SECONDS, then SIGKILLs whatever is left of each group. A worker killed
  mid-task is survivable (jobs recover); a clean stop is kinder, so it gets its chance.
- A part that ends by itself is restarted after a delay that doubles with each quick
  failure (Backoff); what its leader left behind in its group is killed first, so an
  orphaned worker never keeps taking tasks beside the new cluster.
- On Linux each leader is told to stop (SIGTERM) if runstudio itself dies, even by SIGKILL,
  so nothing is left running behind a killed runstudio."""

import ctypes
import errno
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.http.request import validate_host

# Ctrl-C must stop everything within 5 s: 3 s of grace, then SIGKILL, reaping, and
# Python's own exit, with room to spare on a busy 2-core machine (with 3.5 s of grace, a
# busy worker's stop took 5.2 s once, with the machine's two cores fully loaded).
STOP_GRACE_SECONDS = 3.0
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# A part that ran this long before stopping counts as stable: its next delay starts over.
STABLE_SECONDS = 60.0
# Say once that the web server is slow to start (first runs compile and migrate).
SLOW_START_SECONDS = 60.0
# Start a fresh log when the old one is this big, keeping the old one as `<name>.1`.
LOG_ROTATE_BYTES = 10 * 1024 * 1024
TICK_SECONDS = 0.1


class Backoff:
    """How long to wait before restarting a part that stopped: FIRST_RESTART_DELAY, then
    twice as long after each quick failure, up to MAX_RESTART_DELAY; a part that had run
    STABLE_SECONDS starts again from the first delay."""

    def __init__(self, first=FIRST_RESTART_DELAY, cap=MAX_RESTART_DELAY, stable=STABLE_SECONDS):
        self.first, self.cap, self.stable = first, cap, stable
        self.upcoming = first

    def delay_after(self, ran_for: float) -> float:
        if ran_for >= self.stable:
            self.upcoming = self.first
        delay = self.upcoming
        self.upcoming = min(self.upcoming * 2, self.cap)
        return delay


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running. Zombies do not count: they have
    ended and only wait for whoever adopted them to reap them."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_with_parent():
    """A preexec_fn that makes the child's leader receive SIGTERM when runstudio dies (Linux
    only; elsewhere None). libc is loaded here, before any fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec():
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # runstudio died before the line above took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Part:
    """One supervised process (with whatever it starts, all in its own group)."""

    def __init__(self, label: str, args: list[str], log, env: dict):
        self.label, self.args, self.log, self.env = label, args, log, env
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.backoff = Backoff()
        self.preexec = _stop_with_parent()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ended(self) -> bool:
        """True once, when the leader has ended and nobody has dealt with it yet."""
        return self.process is not None and self.restart_at is None and self.process.poll() is not None

    def kill_leftovers(self) -> None:
        """Once the leader has ended, what remains of its group is orphaned: kill it."""
        if self.process is not None and self.process.poll() is not None:
            _kill_group(self.process.pid)

    def group_alive(self) -> bool:
        return self.process is not None and group_alive(self.process.pid)


class Command(BaseCommand):
    help = (
        "Run the studio: the web server and the django-q2 background worker, restarted if "
        "either stops. The console shows the address and how to stop; everything else goes "
        "to a log file: --log-file, or the LOG_FILE environment variable, or studio.log "
        "beside manage.py. Ctrl-C or SIGTERM stops both within 5 s."
    )
    # runserver runs the system checks itself, and its output belongs in the log.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--log-file",
            default=os.environ.get("LOG_FILE") or str(Path(settings.BASE_DIR) / "studio.log"),
            help="Where the web server's and the worker's output goes (default: LOG_FILE, "
            "or studio.log beside manage.py).",
        )

    def handle(self, *args, port, host, log_file, **options):
        self.stopping = 0  # how many stop signals arrived
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_stop_signal)

        self.log_path = Path(log_file).resolve()
        try:
            self.log = self._open_log(self.log_path)
        except OSError as error:
            self._fail(f"Cannot write the log file {self.log_path}: {error.strerror}.")
        self._send_own_output_to_log()

        try:
            port = int(port)
        except ValueError:
            self._fail(f"The port must be a number, not {port!r}.")
        if self._port_taken(host, port):
            self._fail(
                f"Port {port} is already in use on {host}, perhaps by another Lastframe Studio.\n"
                f"Stop that program, or start the studio on another port: make run PORT={port + 1}"
            )

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so the log is written as things happen
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        self.worker = Part("background worker", [*manage, "qcluster"], self.log, env)
        self.web = Part("web server", [*manage, "runserver", "--noreload", f"{host}:{port}"], self.log, env)
        self.parts = [self.web, self.worker]
        self.host, self.port = host, port
        shown_host = f"[{host}]" if ":" in host else host
        self.address = f"http://{shown_host}:{port}/"

        self.note(f"starting on {self.address} (runstudio pid {os.getpid()})")
        self.say("Starting Lastframe Studio...")
        for part in self.parts:
            part.start()
            self.note(f"started the {part.label} (pid {part.process.pid})")
        failed = self._supervise()
        # On a new line: the terminal has just echoed ^C after the last message.
        self.say("\nStopping Lastframe Studio...")
        self._stop_all()
        self.note("stopped")
        self.say("Lastframe Studio stopped.")
        self.log.close()
        if failed:
            sys.exit(1)

    # --- the loop ---------------------------------------------------------------------------

    def _supervise(self) -> bool:
        """Run until a stop signal; True when the studio could not start at all."""
        announced = slow_said = False
        started = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            for part in self.parts:
                if part.ended():
                    code = part.process.returncode
                    part.kill_leftovers()
                    if part is self.web and not announced:
                        self.note(f"the web server ended before it answered (exit code {code})")
                        self._fail_start()
                        return True
                    delay = part.backoff.delay_after(now - part.started_at)
                    part.restart_at = now + delay
                    self.note(f"the {part.label} ended (exit code {code}); restarting it in {delay:g} s")
                    self.say(f"The {part.label} stopped; restarting it in {delay:g} s.")
                elif part.restart_at is not None and now >= part.restart_at:
                    part.kill_leftovers()
                    if part is self.web and self._port_taken(self.host, self.port):
                        delay = part.backoff.delay_after(0)
                        part.restart_at = now + delay
                        self.note(f"port {self.port} is taken; the web server waits {delay:g} s more")
                        self.say(
                            f"Port {self.port} has been taken by another program, so the web server "
                            f"cannot restart. Stop that program; trying again in {delay:g} s."
                        )
                        continue
                    part.start()
                    self.note(f"restarted the {part.label} (pid {part.process.pid})")
            if not announced and self.web.running and self._answers():
                announced = True
                self.note(f"answering on {self.address}")
                self.say(
                    f"\nLastframe Studio is running at {self.address}\n"
                    f"Press Ctrl-C to stop it. Details are written to {self.log_path}\n",
                    style=self.style.SUCCESS,
                )
            elif not announced and not slow_said and now - started > SLOW_START_SECONDS:
                slow_said = True
                self.say(f"Still starting... (see {self.log_path})")
            time.sleep(TICK_SECONDS)
        return False

    def _stop_all(self) -> None:
        """SIGTERM each part's leader, give them STOP_GRACE_SECONDS, then SIGKILL each group.
        Only the leader is signalled: a signal to the whole group makes django-q2 linger."""
        self.note("stopping")
        for part in self.parts:
            if part.running:
                try:
                    part.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        # A second Ctrl-C means "now".
        while time.monotonic() < deadline and self.stopping < 2:
            for part in self.parts:
                part.kill_leftovers()  # a leader that has ended leaves only orphans
            if not any(part.group_alive() for part in self.parts):
                break
            time.sleep(0.05)
        for part in self.parts:
            if part.group_alive():
                self.note(f"the {part.label} did not stop in time; killing it")
                _kill_group(part.process.pid)
        for part in self.parts:
            if part.process is not None:
                try:
                    part.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    self.note(f"the {part.label} (pid {part.process.pid}) could not be reaped")

    def _on_stop_signal(self, signum, frame):
        self.stopping += 1

    # --- helpers ----------------------------------------------------------------------------

    def _answers(self) -> bool:
        """Whether our web server answers /healthz. Only its own "ok" counts: on some
        networks a proxy answers for any address (a 404 from "keryx" was seen here)."""
        target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        connection = http.client.HTTPConnection(target, self.port, timeout=2)
        try:
            connection.request("GET", "/healthz", headers={"Host": f"{self._host_name(target)}:{self.port}"})
            response = connection.getresponse()
            return response.status == 200 and response.read().strip() == b"ok"
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    @staticmethod
    def _host_name(target: str) -> str:
        """A Host name that ALLOWED_HOSTS accepts, so /healthz is not refused with a 400."""
        allowed = settings.ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]"]  # Django's DEBUG default
        own = f"[{target}]" if ":" in target else target
        candidates = [own, "localhost", "127.0.0.1", "[::1]", *(h.lstrip(".") for h in allowed if h != "*")]
        return next((name for name in candidates if validate_host(name, allowed)), own)

    @staticmethod
    def _port_taken(host: str, port: int) -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As runserver binds: a port left in TIME_WAIT by a previous run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                return error.errno == errno.EADDRINUSE
        return False

    @staticmethod
    def _open_log(path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
        # Appending: the parts write to the same file, and O_APPEND keeps their lines whole.
        return open(path, "a", buffering=1)

    def _send_own_output_to_log(self) -> None:
        """Python warnings and log records of this process go to the log, not the console."""

        def showwarning(message, category, filename, lineno, file=None, line=None):
            self.log.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = showwarning
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stderr, sys.stdout):
                handler.setStream(self.log)

    def note(self, message: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        self.log.write(f"{stamp} INFO runstudio: {message}\n")

    def say(self, message: str, style=None) -> None:
        self.stdout.write(message, style_func=style)
        self.stdout.flush()

    def _fail(self, message: str) -> None:
        self.stderr.write(message)
        sys.exit(1)

    def _fail_start(self) -> None:
        """The web server ended before it ever answered: show why, plainly, from the log."""
        self.log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        error = next((line for line in reversed(lines) if line.startswith(("Error:", "CommandError:"))), "")
        reason = f"\n{error.split(':', 1)[1].strip()}" if error else ""
        self.stderr.write(f"The web server could not start.{reason}\nThe details are in {self.log_path}")
