"""The systems under test: one module per server model, plus the contract they share.

``MODELS`` is the registry the orchestrator and the CLI use: a model's name, what it is, whether
its handlers block (which decides how many requests it can hold at once), and the module that
starts it with ``python -m``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    module: str
    blocking: bool
    summary: str


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            "flask-blocking",
            "servers.flask_blocking",
            True,
            "Flask on gunicorn sync workers: one request at a time per worker process",
        ),
        ModelInfo(
            "tornado-forked",
            "servers.tornado_forked",
            True,
            "Tornado with blocking handlers, bind_sockets + fork_processes(workers)",
        ),
        ModelInfo(
            "tornado-coroutine",
            "servers.tornado_coroutine",
            False,
            "Tornado with async def handlers in one process (asyncio, AsyncHTTPClient, aiomysql)",
        ),
    )
}
