"""``gridpatrol users …``: add users with a role and scope, issue tokens, change scopes."""

from __future__ import annotations

import typer

from api import users as users_service
from api.auth import SYSTEM
from api.cli.common import connect, run_async, settings_and_url

app = typer.Typer(no_args_is_help=True)


@app.command("add", help="Add a user and print their first token.")
def add(
    name: str,
    role: str = typer.Option(..., help="admin, planner, dispatcher or viewer"),
    scope: list[str] = typer.Option(
        ["*"], help="NBS code (152502, 152502100…) or grid code; repeat for several; * = all"
    ),
    password: str | None = typer.Option(None, help="for signing in with name and password"),
) -> None:
    _, url = settings_and_url()

    async def go() -> users_service.NewUser:
        async with connect(url) as conn:
            return await users_service.create_user(
                conn, SYSTEM, name, role=role, scope=scope, password=password
            )

    new = run_async(go())
    typer.echo(f"user {new.name} ({new.role}, scope {','.join(new.scope)})")
    typer.echo(f"token: {new.token}")


@app.command("token", help="Issue a new token for a user.")
def token(name: str, label: str = typer.Option("cli", help="what the token is for")) -> None:
    _, url = settings_and_url()

    async def go() -> str:
        async with connect(url) as conn:
            return await users_service.issue_token(conn, SYSTEM, name, label=label)

    typer.echo(run_async(go()))


@app.command("scope", help="Replace a user's scope.")
def scope(
    name: str, codes: list[str] = typer.Argument(..., help="NBS or grid codes, or *")
) -> None:
    _, url = settings_and_url()

    async def go() -> list[str]:
        async with connect(url) as conn:
            return await users_service.set_scope(conn, SYSTEM, name, codes)

    typer.echo(f"{name}: scope {','.join(run_async(go()))}")


@app.command("disable", help="Disable a user and revoke all their tokens.")
def disable(name: str) -> None:
    _, url = settings_and_url()

    async def go() -> int:
        async with connect(url) as conn:
            return await users_service.disable_user(conn, SYSTEM, name)

    typer.echo(f"{name}: disabled, {run_async(go())} token(s) revoked")


@app.command("list", help="List users with role and scope.")
def list_users() -> None:
    _, url = settings_and_url()

    async def go() -> list[dict[str, object]]:
        async with connect(url) as conn:
            return await users_service.list_users(conn, SYSTEM)

    for u in run_async(go()):
        scope_text = ",".join(u["scope"])  # type: ignore[arg-type]
        state = " (disabled)" if u["disabled"] else ""
        typer.echo(f"{u['id']:>4}  {u['name']:<20} {u['role']:<10} {scope_text}{state}")
