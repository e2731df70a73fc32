"""Measuring: the orchestrator and everything that runs while load is applied. It imports
planning, storing and judging's estimators (a window's stopping rule, a cell's judgement as it is
stored); nothing imports it but the CLI.

- ``run``: the orchestrator loop, services up once, each cell in turn, results through the store.
- ``session``: the run directory an invocation writes to (new run, partial rerun, resume).
- ``cell``: one cell: fresh server, equivalence check, Locust, sampling, persisting.
- ``measure``: Locust subprocesses, resource sampling, the equivalence check.
- ``workloads``: how a cell drives each workload (request/response, a room).
- ``room``: the chat room, harness side: verification and the sender.
- ``services``: throwaway MariaDB, Redis, the upstream and server processes.
- ``processes``: child processes in their own process group, always reaped.
- ``metadata``: the machine, package versions and every component's configuration.
"""
