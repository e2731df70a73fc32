"""The coroutine model's resolver, without a server: an IP literal never waits for a thread."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from tornado.netutil import DefaultLoopResolver

from servers.tornado_coroutine import LiteralResolver


class NoThreads(ThreadPoolExecutor):
    """A default executor that refuses work: any getaddrinfo hop to a thread fails."""

    def submit(self, fn, /, *args, **kwargs):
        raise RuntimeError("a thread was asked to resolve")


async def resolve(resolver, host: str):
    asyncio.get_running_loop().set_default_executor(NoThreads())
    return await resolver.resolve(host, 8080)


def test_ip_literals_are_answered_without_a_thread():
    assert asyncio.run(resolve(LiteralResolver(), "127.0.0.1")) == [
        (socket.AF_INET, ("127.0.0.1", 8080))]
    assert asyncio.run(resolve(LiteralResolver(), "::1")) == [
        (socket.AF_INET6, ("::1", 8080, 0, 0))]


def test_tornados_default_resolver_hops_to_a_thread_even_for_a_literal():
    with pytest.raises(RuntimeError, match="thread"):
        asyncio.run(resolve(DefaultLoopResolver(), "127.0.0.1"))


def test_names_still_go_to_the_default_resolver():
    with pytest.raises(RuntimeError, match="thread"):
        asyncio.run(resolve(LiteralResolver(), "localhost"))
