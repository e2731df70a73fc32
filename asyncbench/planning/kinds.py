"""The scenario-kind registry: every fact the harness needs about a kind of workload, declared once.

A kind is what a scenario's requests do: no I/O (``hello``), wait (``sleep``), wait on the slow
upstream (``fetch``) or on the database (``sql``), or hold long-polls in a chat room (``room``).
Its entry says which endpoint serves it and with which parameters, which backing services a run
must start for it, which of them proves that the work happened, what its requests wait on (which
feeds each model's capacity law), its workload (load shape and judgement), and the report section
that shows its metrics and charts. Plan, run, analysis and report ask the entry; none of them
switch on a kind's name. The endpoint itself is implemented once per model in ``servers/``.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncbench.planning.transports import TRANSPORTS
from servers import endpoints

# The workloads: how a kind's cells are driven (``measuring.workloads``) and judged
# (``judging.workloads``), each registry keyed by these names.
REQUEST_RESPONSE = "request-response"
ROOM = "room"


@dataclass(frozen=True)
class ScenarioKind:
    """One kind of workload."""

    name: str
    endpoint: str  # e.g. "/sleep"
    takes_delay: bool  # the request carries ``ms=N`` (the scenario's ``delay_ms``)
    services: tuple[str, ...]  # backing services a run starts for it (``services.SERVICES``)
    proof: str | None  # the service whose work counter must rise during verification
    waits_on: str | None  # what a request holds while waiting: feeds the capacity laws
    predicted: bool  # the queueing prediction min(users, slots) / delay applies
    workload: str = REQUEST_RESPONSE  # how its cells are driven and judged (the workloads)
    # Its own scenario-file fields and their defaults (checked in ``plan``); a room's members
    # are the scenario's load levels.
    fields: tuple[str, ...] = ()
    section: str = "requests"  # how the report shows it (``report.SECTION_BUILDERS``)
    # Every endpoint its cells may record as theirs (a room's transports hold different ones).
    alternatives: tuple[str, ...] = ()

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.endpoint, *self.alternatives)))

    def path(self, delay_ms: int) -> str:
        """The request path a load generator sends, e.g. ``/sleep?ms=100``."""
        return f"{self.endpoint}?ms={delay_ms}" if self.takes_delay else self.endpoint

    def expected_body(self, delay_ms: int) -> bytes:
        """What every model must answer, byte for byte (the equivalence check)."""
        if self.takes_delay:
            return endpoints.delay_body(self.name, delay_ms)
        return endpoints.hello_body()

    def slots(self, model, config, db_max_connections: int | None) -> float | None:
        """How many of these requests ``model`` can hold at once; None when no prediction
        applies (no waiting to overlap)."""
        if not self.predicted:
            return None
        return model.slots(config, self.waits_on, db_max_connections)


KINDS: dict[str, ScenarioKind] = {
    k.name: k
    for k in (
        ScenarioKind("hello", "/hello", takes_delay=False, services=(), proof=None,
                     waits_on=None, predicted=False),
        ScenarioKind("sleep", "/sleep", takes_delay=True, services=(), proof=None,
                     waits_on=None, predicted=True),
        ScenarioKind("fetch", "/fetch", takes_delay=True, services=("upstream",),
                     proof="upstream", waits_on="upstream", predicted=True),
        ScenarioKind("sql", "/sql", takes_delay=True, services=("database",),
                     proof="database", waits_on="database", predicted=True),
        # The chat room: members hold long-polls on a message bus (servers.room, servers.bus).
        ScenarioKind("room", "/room/poll", takes_delay=False, services=("bus",), proof="bus",
                     waits_on=None, predicted=False, workload=ROOM,
                     fields=("transport", "message_rate", "hold_s", "probe_rate"),
                     section="room",
                     alternatives=tuple(t.endpoint for t in TRANSPORTS.values())),
    )  # fmt: skip
}
ENDPOINTS = {k.endpoint: k for k in KINDS.values() if not k.fields}  # chosen by endpoint
RECORDED_ENDPOINTS = {e: k for k in KINDS.values() for e in k.endpoints}  # a results row's kind


def kind_of_endpoint(endpoint: str) -> ScenarioKind:
    return ENDPOINTS[endpoint]


def section_of_endpoint(endpoint: object) -> str:
    """The report section of a results row's recorded endpoint ("requests" when unknown)."""
    kind = RECORDED_ENDPOINTS.get(endpoint) if isinstance(endpoint, str) else None
    return kind.section if kind else "requests"
