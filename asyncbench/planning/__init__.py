"""Planning: what to measure, decided before any process starts.

It imports storing only: a kind's measuring and judging halves live in their own stages
(``measuring.workloads``, ``judging.workloads``), joined by the name its entry gives.

- ``plan``: scenario files validated into ``Scenario`` records, expanded into seeded ``Cell`` lists.
- ``kinds``: the scenario-kind registry, every fact about a kind of workload declared once.
- ``transports``: the room's transports (long-poll, WebSocket).
- ``thresholds``: a scenario's k6-style pass/fail limits.
- ``settings``: ``RunSettings``, the flags of ``asyncbench run``, planned into cells.
- ``validate``: every flag of every subcommand checked before anything starts.
"""
