"""Issue 18, item 20 (admin token): ``gridpatrol run`` printed the admin token on every start.

It must be shown once, when it is created, and kept in a 0600 file; later starts say where the
file is without printing the token.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from api import users as users_service
from api.cli import serve
from api.settings import ApiSettings, Settings


def test_the_admin_token_is_printed_once_at_creation_then_only_its_file(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(api=ApiSettings(state_dir=tmp_path / "state"))
    created = users_service.NewUser(
        id=1, name="admin", role="admin", scope=["*"], token="gp_first-start-secret"
    )
    answers: list[users_service.NewUser | None] = [created, None, None]

    async def ensure_admin(_conn: Any, name: str = "admin") -> users_service.NewUser | None:
        return answers.pop(0)

    monkeypatch.setattr(users_service, "ensure_admin", ensure_admin)
    base = "http://127.0.0.1:8000"

    token, kept = serve._admin_token(settings, db_url)  # first start: the admin is created
    assert token == "gp_first-start-secret"
    assert kept == tmp_path / "state" / serve.ADMIN_TOKEN_FILE
    assert kept.read_text().strip() == "gp_first-start-secret"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    first = "\n".join(serve._admin_token_lines(base, token, kept))
    assert "gp_first-start-secret" in first

    for _ in range(2):  # every later start
        token, kept_again = serve._admin_token(settings, db_url)
        assert token is None
        assert kept_again == kept
        later = "\n".join(serve._admin_token_lines(base, token, kept_again))
        assert "gp_first-start-secret" not in later
        assert str(kept) in later
    assert kept.read_text().strip() == "gp_first-start-secret"  # still there for the CLI
