"""Judging: numbers and verdicts computed from stored raw facts. It imports planning and
storing, no measuring code (measuring imports judging's estimators for its stopping rule and
each cell's evaluation).

- ``throughput``: throughput estimators without quantisation, and their standard errors.
- ``intervals``: ratios between two sets of repeats, with honest intervals.
- ``comparison``: one metric's A/A noise floor and one comparison's verdict.
- ``evaluate``: one cell's numbers and its one judgement of validity.
- ``predict``: the queueing predictions a measurement is compared with.
- ``workloads``: each workload's cell columns from its raw facts, live or stored.
- ``room``: a room cell's numbers: deliveries, losses, members held, the probe.
- ``bottleneck``: what limits a cell, from measured service demands and slots.
- ``analyze``: across cells: aggregates per level, plateaus, knees, model comparisons.
- ``noise``: the run's noise floors per scenario, from its A/A pair or a default.
- ``repeats``: the default profile's second repeats, where the first does not settle it.
- ``gate``: the regression gate and k6-style thresholds.
- ``regression``: ``asyncbench compare`` and ``run --check`` on stored runs.
"""
