"""GridPatrol service layer: settings, database, routers, device protocols, CLI and map pages."""

__version__ = "0.1.0"
