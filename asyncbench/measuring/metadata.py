"""Run metadata: the machine, package versions, and how every component was configured."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from servers import MODELS
from servers.config import ServerConfig

PACKAGES = ("tornado", "flask", "gunicorn", "gevent", "fastapi", "starlette", "uvicorn", "uvloop",
            "httptools", "aiohttp", "websockets", "locust", "pymysql", "aiomysql", "redis",
            "pandas", "pyarrow")  # fmt: skip


def machine_info() -> dict:
    return {
        "hostname": platform.node(),
        "cpu_count": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict:
    """Installed versions of ``names`` (missing packages are left out)."""
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def describe_servers(config: ServerConfig, target: str | None, defaults: str) -> dict:
    """Each model's configuration as the report shows it: the knobs that apply to it."""
    where = {"host": urlsplit(target).hostname if target else "localhost",
             "started_by": "elsewhere (--target)" if target else "asyncbench"}  # fmt: skip
    described = {}
    for name, spec in MODELS.items():
        own = spec.configure(config, defaults)
        knobs = {"workers": own.workers} if target else spec.describe(own)
        described[name] = {
            "summary": spec.summary, "concurrency": spec.concurrency.name,
            "slot_unit": spec.concurrency.unit, **knobs, "bind": config.host, **where,
            "keep_alive": spec.keep_alive, "pool sizes": defaults,
        }  # fmt: skip
    return described


def describe_locust(local_workers: int, remote_workers: int, master_bind: str, mode: str) -> dict:
    distributed = local_workers + remote_workers > 0
    return {
        "user_class": "BenchUser (FastHttpUser, no wait)",
        "mode": mode,
        "processes": 1 + local_workers if distributed else 1,
        "master": "localhost" if distributed else None,
        "local_workers": local_workers,
        "remote_workers": remote_workers,
        "master_bind": master_bind if remote_workers else None,
    }


def describe_services(handles: dict, locust: dict) -> dict:
    """The load generator and each backing service the run used (``services.backing_services``)."""
    return {"locust": locust, **{name: handle.describe() for name, handle in handles.items()}}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
