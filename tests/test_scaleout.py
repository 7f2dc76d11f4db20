"""The scale-out configuration for real: PostgreSQL (DATABASE_URL) and the Redis broker
(REDIS_URL), as on a deployment with several workers. These use the services on loopback
and skip, saying why, when they are not reachable."""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import TEST_SIMULATOR_HEIGHT, provider_secret_settings

ROOT = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = os.environ.get("STUDIO_TEST_PG_HOST", "127.0.0.1"), 5432
REDIS = os.environ.get("STUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def reachable(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_ready():
    if not reachable(PG_HOST, PG_PORT):
        return False
    try:
        import psycopg

        psycopg.connect(f"host={PG_HOST} user=postgres dbname=postgres", connect_timeout=2).close()
        return True
    except Exception:
        return False


needs_postgres = pytest.mark.skipif(
    not postgres_ready(), reason=f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} as user postgres"
)
needs_redis = pytest.mark.skipif(
    not reachable("127.0.0.1", 6379), reason="Redis is not reachable on 127.0.0.1:6379"
)


def base_env(tmp_path, database_url, **extra):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "SECRET_KEY": "scaleout-test-key",
        "STUDIO_IGNORE_DOTENV": "1",
        "SIMULATOR_HEIGHT": str(TEST_SIMULATOR_HEIGHT),
        **dict.fromkeys(provider_secret_settings(), ""),
        **extra,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@needs_postgres
def test_job_and_fault_tests_pass_again_on_postgresql(tmp_path):
    database = f"lastframe_ci_{uuid.uuid4().hex[:8]}"
    env = base_env(tmp_path, f"postgres://postgres@{PG_HOST}:{PG_PORT}/{database}")
    files = [str(p) for p in (ROOT / "tests/test_jobs.py", ROOT / "tests/test_faults.py") if p.exists()]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


@needs_postgres
def test_simultaneous_first_accounts_make_one_admin_on_postgresql(tmp_path):
    """tests/test_accounts.py's threaded first run, on a database where the threads' posts
    really run side by side. The first-run tests alone: the file's sign-in pauses are no
    different there."""
    database = f"lastframe_ci_{uuid.uuid4().hex[:8]}"
    env = base_env(tmp_path, f"postgres://postgres@{PG_HOST}:{PG_PORT}/{database}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_accounts.py",
            "-k",
            "first_account",
            "-rs",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


def manage(env, *args, input_text=None, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        check=True,
    ).stdout


SHELL_CREATE = """
from django.contrib.auth import get_user_model
from django.db import transaction
from studio import jobs
from studio.catalogue import find_model
user, _ = get_user_model().objects.get_or_create(username="ana")
spec = find_model("simulator:motion")
with transaction.atomic():
    for n in range({count}):
        jobs.start_clip(user, spec, prompt=f"Scale-out clip {{n}} on many workers", aspect_ratio="1:1", duration=5)
"""


def clip_states(database):
    """Each clip's (status, error, submit_attempts, remote_id), read straight from the
    database: a `manage.py shell` per look cost 1.5 s of CPU, once a second."""
    import psycopg

    with psycopg.connect(f"host={PG_HOST} user=postgres dbname={database}") as conn:
        return conn.execute(
            "SELECT status, error, submit_attempts, remote_id FROM studio_clip ORDER BY id"
        ).fetchall()


@needs_postgres
@needs_redis
def test_two_workers_on_redis_and_postgresql_make_every_clip_once(tmp_path):
    import psycopg
    import redis

    database = f"lastframe_ci_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"host={PG_HOST} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(REDIS).flushdb()
    env = base_env(
        tmp_path,
        f"postgres://postgres@{PG_HOST}:{PG_PORT}/{database}",
        REDIS_URL=REDIS,
        SIMULATOR_DELAY_SECONDS="0.5",
        Q_WORKERS="2",
        POLL_SWEEP_SECONDS="30",
    )
    workers = []
    try:
        manage(env, "migrate", "--noinput")
        # Two clusters, as on two machines, sharing one database and one broker.
        for n in range(2):
            log = open(tmp_path / f"worker{n}.log", "w")
            workers.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        manage(env, "shell", "-c", SHELL_CREATE.format(count=6))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = clip_states(database)
            if all(state in ("ready", "failed") for state, *_ in states):
                break
            time.sleep(1)
        assert [s[0] for s in states] == ["ready"] * 6, states
        assert all(attempts == 1 for _, _, attempts, _ in states)
        # Each clip became exactly one job on the (simulated) provider.
        jobs = list((tmp_path / "media" / "simulator").iterdir())
        assert len(jobs) == 6
        assert sorted(j.name for j in jobs) == sorted(remote for *_, remote in states)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        with psycopg.connect(f"host={PG_HOST} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
