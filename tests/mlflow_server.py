"""A throw-away mlflow server (``mlflow ui`` or ``mlflow server``) on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_server(command: str, store: Path, *extra: str) -> Iterator[str]:
    """``mlflow <command>`` over the sqlite ``store`` on a free loopback port; yields its base URL
    once /health answers, and stops the server and its workers (by process group) after."""
    port = free_port()
    cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(cli), command, "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1", "--port", str(port),
         *extra], env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
