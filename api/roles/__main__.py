"""``python -m api.roles ROLE [--host H] [--port P]``: one role process, as the supervisor of
``gridpatrol serve --role all`` starts it (the database URL in ``DATABASE_URL``; no cluster is
started and nothing is migrated here)."""

from __future__ import annotations

import argparse
import contextlib
import logging

from api.db import database_url
from api.roles import ROLES
from api.roles.process import die_with_supervisor, serve_one
from api.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m api.roles", description=__doc__)
    parser.add_argument("role", choices=[*ROLES, "single"])
    parser.add_argument("--host", help="HTTP listen address of the api role")
    parser.add_argument("--port", type=int, help="HTTP port of the api role")
    args = parser.parse_args()
    die_with_supervisor()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if args.host:
        settings.api.host = args.host
    if args.port:
        settings.api.port = args.port
    with contextlib.suppress(KeyboardInterrupt):
        serve_one(settings, database_url(settings), args.role)


main()
