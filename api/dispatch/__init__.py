"""Incidents (警情) and nearest-responder dispatch (派警).

``incidents`` creates and reads incidents, ``candidates`` ranks responders (KNN in PostGIS,
ETAs in ``gis.dispatch``, road times from ``routing``), ``assign`` and ``workflow`` move an
incident through new → dispatched → accepted → arrived → cleared / cancelled, ``escalation``
widens the responders (网格预警 → 吹哨 → 报到) and forwards notifications, ``arrival`` marks
arrivals from fixes as they are stored, ``stats`` reports response times.
"""

from __future__ import annotations

STATUSES = ("new", "dispatched", "accepted", "arrived", "cleared", "cancelled")
OPEN = ("new", "dispatched", "accepted", "arrived")
ACTIVE = ("dispatched", "accepted", "arrived")  # a responder is bound to the incident
UNACCEPTED = ("new", "dispatched")  # escalation runs while nobody has accepted
