"""A real ``python -m pneumocxr serve`` process on a free loopback port: keys from the CLI, requests
over HTTP, then ``kill -9`` during a stream of requests. Whatever got an answer has its audit row; the
database opens clean; ``audit export`` works. Also on a real PostgreSQL shared by two servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from tests.inference.conftest import write_checkpoint
from tests.postgres import postgres_base_url, postgres_schema
from tests.serving.conftest import encode, film
from tests.store.conftest import subprocess_env

from pneumocxr.cli.main import main
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditLog

pytestmark = pytest.mark.slow

START_DEADLINE_S = 90  # import torch + FastAPI, load and warm the model, migrate the database
JPEG = {"content-type": "image/jpeg"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One ``pneumocxr serve`` child process; its output goes to a log file (a pipe could fill)."""

    def __init__(self, model: Path, db: str, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        card = log.with_suffix(".card.md")
        card.write_text("# Test model\n", encoding="utf-8")  # no model card build: no training imports
        command = [sys.executable, "-m", "pneumocxr", "serve", "--model", str(model), "--db", db]
        command += ["--port", str(self.port), "--card", str(card), "--threads", "1", *extra]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        pytest.fail(f"serve not ready within {START_DEADLINE_S} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL by PID (no clean shutdown: the point of the test), then reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@contextmanager
def running(model: Path, db: str, log: Path, *extra: str) -> Iterator[Server]:
    server = Server(model, db, log, *extra)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model") / "best.pt")


def cli_key(db: str, capsys) -> str:
    assert main(["serve", "keys", "create", "uvicorn test", "--db", db]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


IMAGES = [encode(film(seed=seed), "JPEG") for seed in range(4)]
JUNK = b"this is not an image\n" * 10


class Stream:
    """Requests in a loop from a thread until the server goes away (or a bound is reached):
    the (request id, status) of every request that got an answer."""

    def __init__(self, urls: list[str], token: str | None, limit: int = 400, deadline_s: float = 60):
        self.urls, self.limit, self.deadline_s = urls, limit, deadline_s
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self.answered: list[tuple[str, int, str]] = []  # (request id, status, server url)
        self.failures = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        stop = time.monotonic() + self.deadline_s
        with httpx.Client(timeout=10) as client:
            for i in range(self.limit):
                if time.monotonic() > stop:
                    return
                url = self.urls[i % len(self.urls)]
                body = JUNK if i % 5 == 4 else IMAGES[i % len(IMAGES)]
                try:
                    answer = client.post(f"{url}/v1/predict", content=body, headers={**JPEG, **self.headers})
                except httpx.TransportError:
                    self.failures += 1
                    if self.failures >= 3:  # the server is gone
                        return
                    continue
                self.answered.append((answer.headers["x-request-id"], answer.status_code, url))

    def wait_for(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered) < count and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.02)
        assert len(self.answered) >= count, f"only {len(self.answered)} answers"


def assert_every_answer_audited(db: str, answered: list[tuple[str, int, str]]) -> dict[str, dict]:
    store = open_store(db)
    try:
        rows = {row["request_id"]: row for row in AuditLog(store).rows()}
    finally:
        store.dispose()
    missing = [(rid, status) for rid, status, _ in answered if rid not in rows]
    assert not missing, f"{len(missing)} answered requests have no audit row: {missing[:5]}"
    for request_id, status, _ in answered:
        assert rows[request_id]["status"] == status
    assert {status for _, status, _ in answered} >= {200, 422}  # answers and refusals alike
    return rows


def assert_export_works(db: str, tmp_path: Path, at_least: int) -> None:
    out = tmp_path / "export.jsonl"
    assert main(["audit", "export", "--db", db, "--format", "jsonl", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) >= at_least and all(line["request_id"] for line in lines)


def test_real_server_answers_then_survives_kill_9_with_every_answer_audited(model, tmp_path, capsys):
    db = str(tmp_path / "audit.db")
    token = cli_key(db, capsys)
    with running(model, db, tmp_path / "serve.log") as server:
        bearer = {"authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.post("/v1/predict", content=IMAGES[0], headers=JPEG).status_code == 401
            good = client.post("/v1/predict", content=IMAGES[0], headers={**JPEG, **bearer})
            assert good.status_code == 200 and good.json()["label"] in ("NORMAL", "PNEUMONIA")
            upload = client.post("/v1/predict", files={"file": ("x.jpg", IMAGES[1])}, headers=bearer)
            assert upload.status_code == 200
            assert client.post("/v1/predict", content=JUNK, headers={**JPEG, **bearer}).status_code == 422
            assert client.get("/v1/model", headers=bearer).json()["identity"]["sha256"]
            assert 'route="/v1/predict",status="200"' in client.get("/metrics").text
        first = [(r.headers["x-request-id"], r.status_code, server.url) for r in (good, upload)]

        stream = Stream([server.url], token)
        stream.thread.start()
        stream.wait_for(12)
        server.kill()  # mid-stream: some request is being read, predicted or audited right now
        stream.thread.join(timeout=30)
    assert not stream.thread.is_alive() and stream.failures > 0  # the stream saw the server vanish
    with sqlite3.connect(db) as connection:  # opens clean, WAL recovered
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert_every_answer_audited(db, first + stream.answered)
    assert_export_works(db, tmp_path, len(stream.answered) + 3)


def test_two_servers_share_one_postgresql_audit_database_and_survive_kill_9(model, tmp_path, capsys):
    with postgres_schema(postgres_base_url()) as db:
        token = cli_key(db, capsys)
        with ExitStack() as stack:  # both start together: the migration must not race
            servers = [Server(model, db, tmp_path / f"serve{i}.log") for i in range(2)]
            for server in servers:
                stack.callback(server.kill)
            for server in servers:
                server.wait_ready()
            stream = Stream([s.url for s in servers], token, limit=30)
            stream.thread.start()
            stream.thread.join(timeout=90)
            assert {url for _, _, url in stream.answered} == {s.url for s in servers}  # both answer
            assert len(stream.answered) == 30
            rows = assert_every_answer_audited(db, stream.answered)
            assert len(rows) == 30

            stream = Stream([servers[0].url], token)
            stream.thread.start()
            stream.wait_for(8)
            servers[0].kill()
            stream.thread.join(timeout=30)
            assert stream.failures > 0
            survivor = Stream([servers[1].url], token, limit=5)  # the other goes on answering
            survivor.thread.start()
            survivor.thread.join(timeout=60)
            assert [status for _, status, _ in survivor.answered] == [200, 200, 200, 200, 422]
        assert_every_answer_audited(db, stream.answered + survivor.answered)
        assert_export_works(db, tmp_path, 30 + len(stream.answered) + 5)
