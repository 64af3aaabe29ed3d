"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, ``initdb`` in a
temporary directory, ``pg_ctl start`` on a free port of 127.0.0.1, ``pg_ctl stop`` and the
directory removed after.

``initdb`` and ``postgres`` refuse to run as root, so under root both run as the
``postgres`` system user (the Debian package creates it), or ``nobody``, through
``runuser``; the data directory is created for that user. One database per test
(``CREATE DATABASE`` with ``STRATEGY FILE_COPY``, fast with ``fsync=off``) keeps tests
apart while the cluster is started once per session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

PG_BIN = Path(os.environ.get("FANOUT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def missing_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here, or ``None``."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return (f"PostgreSQL server binaries not found in {PG_BIN} "
                "(apt-get install postgresql, or set FANOUT_TEST_PG_BIN)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'fanout-analytics[postgres]')"
    if os.geteuid() == 0 and _unprivileged_user() is None:
        return "running as root and neither a 'postgres' nor a 'nobody' user exists"
    return None


def _unprivileged_user() -> str | None:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``start()`` a cluster, ``create_database()`` per test, ``stop()`` at the end."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.user = "fanout"
        self._fsync = fsync
        self._run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self._dir = Path(tempfile.mkdtemp(prefix="fanout-pg-"))
        self.data = self._dir / "data"
        self.port = 0
        self._count = 0
        self._lock = threading.Lock()
        self.pid: int | None = None

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as is None:
            return list(args)
        return ["runuser", "-u", self._run_as, "--", *args]

    def start(self) -> Cluster:
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._cmd(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user,
                      "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
            check=True, capture_output=True, timeout=120,
        )
        self.port = free_port()
        options = (f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1"
                   f" -c fsync={'on' if self._fsync else 'off'} -c max_connections=200"
                   " -c shared_buffers=128MB")
        subprocess.run(
            self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                      str(self._dir / "server.log"), "-w", "-t", "60", "-o", options, "start"),
            check=True, capture_output=True, timeout=90,
        )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        with self._lock:
            self._count += 1
            name = f"t{self._count}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.pid is not None:
                subprocess.run(
                    self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                              "-w", "-t", "60", "stop"),
                    capture_output=True, timeout=90,
                )
                try:  # pg_ctl gave up: stop it by its pid
                    os.kill(self.pid, 0)
                    os.kill(self.pid, 9)
                except ProcessLookupError:
                    pass
        finally:
            self.pid = None
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
