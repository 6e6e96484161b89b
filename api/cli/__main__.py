"""``python -m api.cli``: the ``gridpatrol`` command (how the supervisor starts the roles)."""

from api.cli import main

main()
