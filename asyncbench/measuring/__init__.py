"""Measuring: the orchestrator and everything that runs while load is applied.

- ``run``: the orchestrator loop, services up once, each cell in turn, results through the store.
- ``cell``: one cell: fresh server, equivalence check, Locust, sampling, persisting.
- ``measure``: Locust subprocesses, resource sampling, the equivalence check.
- ``workloads``: how a cell drives each load shape (request/response, a room).
- ``room``: the chat room, harness side: transports, verification, the sender, a room's numbers.
- ``services``: throwaway MariaDB, Redis, the upstream and server processes.
- ``processes``: child processes in their own process group, always reaped.
- ``metadata``: the machine, package versions and every component's configuration.
"""
