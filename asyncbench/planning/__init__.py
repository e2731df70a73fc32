"""Planning: what to measure, decided before any process starts.

It should import no measuring code; not yet: ``kinds`` imports measuring's room and
workload halves, ``plan`` imports ``room.TRANSPORTS`` and judging's ``gate``.

- ``plan``: scenario files validated into ``Scenario`` records, expanded into seeded ``Cell`` lists.
- ``kinds``: the scenario-kind registry, every fact about a kind of workload declared once.
- ``session``: ``RunSettings`` and the run-directory session (new run, partial rerun, resume).
- ``validate``: every flag of every subcommand checked before anything starts.
"""
