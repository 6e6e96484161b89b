"""Process roles: who runs what (``gridpatrol serve --role api | ingest | worker | all``).

- ``api`` — the FastAPI app: routes, pages, tiles, uploads (``api.app``);
- ``ingest`` — the device listeners and the group-commit writer: parse, filter, store, ack;
- ``worker`` — the periodic jobs: coverage, report jobs, dispatch escalation, scheduled layouts,
  partitions;
- ``all`` — a supervisor (``api.roles.supervisor``) running the three as child processes.

``api.roles.services`` starts each role's parts; ``create_app`` with every role (its default)
is the single process the tests use.
"""

from __future__ import annotations

API, INGEST, WORKER = "api", "ingest", "worker"
ROLES = (API, INGEST, WORKER)
ALL_IN_ONE = frozenset(ROLES)
READY = "gridpatrol: role ready"  # a child prints this line once it serves (the supervisor waits)
SUPERVISOR_ENV = "GRIDPATROL_SUPERVISOR_PID"  # set in a child of the supervisor
