"""The README stays true: every setting is documented, every command it shows exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from typer.main import get_command
from typer.testing import CliRunner

from api.cli import app
from api.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme() -> None:
    missing = []
    for group, values in vars(Settings()).items():
        prefix = str(values.model_config.get("env_prefix", ""))
        assert prefix.rstrip("_") in README, f"settings group {group} ({prefix}…) undocumented"
        for name in type(values).model_fields:
            if name == "url":  # DATABASE_URL, documented under its own name
                continue
            if not re.search(rf"[`_]{name.upper()}\b", README):
                missing.append(f"{prefix}{name.upper()}")
    assert missing == []


def _commands() -> list[list[str]]:
    """``gridpatrol …`` lines of the README's shell blocks, as argument lists."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.split("  #")[0].strip()
            if line.startswith("gridpatrol "):
                lines.append(shlex.split(line)[1:])
    return lines


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_commands_parse(argv: list[str]) -> None:
    """Each command the README shows names a real command and only options it has (files it
    names need not exist: values are not checked, only the command line's shape)."""
    command: Any = get_command(app)  # Typer ships its own click: duck-typed here
    rest = list(argv)
    while hasattr(command, "list_commands"):
        assert rest, f"{argv}: a group needs a command"
        sub = command.get_command(None, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {argv}"
        command, rest = sub, rest[1:]
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    given = {a.split("=")[0] for a in rest if a.startswith("--")}
    assert given <= known, f"{argv}: unknown options {sorted(given - known)}"


def test_settings_command_prints_every_group_and_hides_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRIDPATROL_DISPATCH_WEBHOOK_URL", "https://user:secret@hooks.example/x")
    out = CliRunner().invoke(app, ["settings"]).output
    for group, values in vars(Settings()).items():
        assert f"[{group}]  {values.model_config.get('env_prefix')}" in out
    assert "secret" not in out
    assert "webhook_url = ***" in out


def test_every_address_in_the_readme_is_served(client: TestClient) -> None:
    """Paths the README names (``/api/…``, ``/maps/…``, ``/tiles/…``, ``/collections…``,
    ``/reports/…``) match a route of the app."""
    patterns = [
        re.compile(re.sub(r"\{[^}]+\}", "[^/]+", str(context.path)) + "$")
        for context in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
    ]
    named = re.findall(
        r"`(?:(?:GET|POST|PUT|PATCH|DELETE) )?(/(?:api|maps|tiles|collections|reports)"
        r"[^`\s…]*)`",
        README,
    )
    assert len(named) > 20
    unserved = []
    for path in named:
        bare = re.sub(r"\{[^}]+\}", "x", path.split("?")[0])
        if not any(p.match(bare) for p in patterns):
            unserved.append(path)
    assert unserved == []
