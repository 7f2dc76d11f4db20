"""Start the web server and the background worker together: what `make run` calls.

Ctrl-C (or SIGTERM) stops both, giving the worker time to finish the task in hand; a
worker killed mid-task is survivable (jobs recover), but a clean stop is kinder."""

import os
import signal
import socket
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 20


class Command(BaseCommand):
    help = "Run the studio: web server and django-q2 worker in one command."

    def add_arguments(self, parser):
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))

    def handle(self, *args, port, host, **options):
        manage = [sys.executable, "manage.py"]
        children = [
            subprocess.Popen(manage + ["qcluster"]),
            subprocess.Popen(manage + ["runserver", "--noreload", f"{host}:{port}"]),
        ]
        shown_host = f"[{host}]" if ":" in host else host
        # Say where the studio is only once it answers, so the address works when shown.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and all(c.poll() is None for c in children):
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        self.stdout.write(
            self.style.SUCCESS(
                f"\nLastframe Studio is running at http://{shown_host}:{port}/  (press Ctrl-C to stop)\n"
            )
        )
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.3)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        self.stdout.write("Lastframe Studio stopped.")
        failed = [
            c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT, None)
        ]
        if failed and not stopping:
            sys.exit(1)
