"""Starts a real Feldpost binary on a free port with a fresh data directory for each test."""

import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """
[registration]
argon2_memory_kib = 64
argon2_iterations = 1
[rate_limits]
enabled = false
[log]
format = "pretty"
level = "info,ruma_state_res=warn"
"""


class Server:
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(data_dir, "feldpost.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.proc = None

    def start(self):
        binary = os.environ.get("FELDPOST_BIN", "target/debug/feldpost")
        self.log = open(os.path.join(self.data_dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", self.config, "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", os.path.join(self.data_dir, "data"), "--open-registration"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/_matrix/client/versions", timeout=1)
                return
            except Exception:
                if self.proc.poll() is not None:
                    raise RuntimeError("feldpost exited early")
                time.sleep(0.05)
        raise RuntimeError("feldpost did not start")

    def kill(self, sig=9):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


    def log_tail(self, n: int = 40) -> str:
        try:
            with open(os.path.join(self.data_dir, "server.log"), "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines[-n:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        srv = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        if isinstance(srv, Server):
            report.sections.append(("feldpost server log (tail)", srv.log_tail()))


@pytest.fixture
def server():
    with tempfile.TemporaryDirectory() as d:
        s = Server(d)
        s.start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
async def alice(server):
    from interop_helpers import make_user

    c = await make_user(server.url, "alice")
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def bob(server):
    from interop_helpers import make_user

    c = await make_user(server.url, "bob")
    try:
        yield c
    finally:
        await c.close()
