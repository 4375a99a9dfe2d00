"""``ServeSettings``: every knob of the service, checked once at start-up."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from pneumocxr.errors import ConfigError

MB = 1 << 20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    model: Path  # checkpoint, run folder's best.pt, ensemble file (or an exported .onnx)
    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = 8000
    auth: bool = True  # API keys required; off only on loopback
    db: str | None = None  # SQLAlchemy URL or SQLite path; None = output/serve/audit.db
    max_upload_bytes: int = 50 * MB  # larger bodies get 413 before they are read
    timeout_s: float = 30.0  # a request not answered in this time gets 504
    workers: int = 1  # model calls at once (each uses the CPU threads below)
    max_queue: int = 16  # requests waiting for a model slot; one more gets 503 + Retry-After
    device: str = "cpu"
    threads: int | None = None  # CPU threads per model call; None = the cores this process may use
    runtime: str = "onnx"  # onnx (ONNX Runtime; a checkpoint is exported once) | torch
    refuse: tuple[str, ...] | None = None  # scope checks that refuse (None = the core's default policy)
    cors_origins: tuple[str, ...] = ()  # CORS off unless origins are named
    card: Path | None = None  # a model card (Markdown) to show; None = built from the checkpoint
    model_cache: Path | None = None  # where a checkpoint's ONNX export is kept; None = beside the SQLite db
    extra: dict = field(default_factory=dict)

    def check(self) -> ServeSettings:
        if not self.auth and not is_loopback(self.host):
            raise ConfigError(
                f"--no-auth with --host {self.host}: without API keys the service may only listen on "
                "loopback (127.0.0.1); create a key with `pneumocxr serve keys create NAME`"
            )
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: use 1-65535")
        for name in ("max_upload_bytes", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.max_queue < 0 or self.timeout_s <= 0:
            raise ConfigError("--max-queue must be >= 0 and --timeout > 0")
        if self.runtime not in ("torch", "onnx"):
            raise ConfigError(f"--runtime {self.runtime!r}: use torch or onnx")
        if not Path(self.model).exists():
            raise ConfigError(
                f"--model {self.model}: no such file or folder; train one (make run) or pass its path"
            )
        return self

    def models_dir(self) -> Path:
        """The ONNX export cache: ``model_cache``, else a ``models`` folder beside a SQLite database
        (so a test's temporary database keeps its exports too), else output/serve/models."""
        if self.model_cache is not None:
            return Path(self.model_cache)
        db = str(self.db or "")
        if db and "://" not in db:
            return Path(db).expanduser().parent / "models"
        if db.startswith("sqlite:///"):
            return Path(db[len("sqlite:///") :]).parent / "models"
        return Path("output/serve/models")

    def cpu_threads(self) -> int:
        if self.threads:
            return self.threads
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, cores // self.workers)
