"""A throw-away PostgreSQL cluster for tests: initdb in a temporary folder, listening on
127.0.0.1 on a free port, stopped whatever happens (docs/sources.md).

    with throwaway_postgres() as url:      # postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres
        ...

As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root), so the
cluster lives in its own folder directly under the system temporary directory, where that user
can reach it; the folder is removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{part}'" for part in command)]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a private cluster; yield its SQLAlchemy URL; stop it and delete it on exit."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="cir-harness-postgres-"))
    data = folder / "pgdata"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        folder.chmod(0o700)
    port = _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    start = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-o", options, "start"]
    try:
        subprocess.run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]),
                       check=True, capture_output=True)
        subprocess.run(_as_server_user(start), check=True, capture_output=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
