"""``kiln apps``, ``apps:create``, ``apps:info``, ``apps:destroy``."""

from __future__ import annotations

import click

from kiln.cli.options import app_option, json_option, resolve_app, when
from kiln.cli.output import console, emit_json, print_table, success
from kiln.client import APPS, ApiClient, app_path
from kiln.errors import InvalidInput
from kiln.models import AppCreate, AppInfo


@click.command("apps")
@json_option
def apps(as_json: bool) -> None:
    """List apps."""
    found = ApiClient.from_environment().get(APPS, list[AppInfo])
    if as_json:
        emit_json(found)
        return
    rows = [(a.name, f"v{a.release}" if a.release else "-", when(a.created_at)) for a in found]
    print_table(
        ("NAME", "RELEASE", "CREATED"), rows, "No apps yet. Create one: kiln apps:create NAME"
    )


@click.command("apps:create")
@click.argument("name")
@click.option("--public", is_flag=True, help="Serve without API keys (no api-keys add-on).")
@json_option
def apps_create(name: str, public: bool, as_json: bool) -> None:
    """Create an app named NAME; its URL needs API keys unless --public."""
    app = ApiClient.from_environment().post(
        APPS, AppInfo, AppCreate(name=name, public=public).model_dump()
    )
    if as_json:
        emit_json(app)
        return
    from kiln.cli.git import add_remote, in_git_repo

    if in_git_repo():  # as Heroku does: the new app's remote, ready to push to
        url = add_remote(app.name)
        success(
            f"Created {app.name} (v{app.release}); git remote kiln -> {url}", "git push kiln main"
        )
        return
    success(
        f"Created {app.name} (v{app.release}).",
        f"kiln config:set -a {app.name} KEY=VALUE, or kiln deploy -a {app.name}",
    )


@click.command("apps:info")
@app_option
@json_option
def apps_info(app: str | None, as_json: bool) -> None:
    """Show an app."""
    info = ApiClient.from_environment().get(app_path(resolve_app(app)), AppInfo)
    if as_json:
        emit_json(info)
        return
    out = console()
    out.print(f"=== {info.name}")
    out.print(f"Release:  v{info.release}")
    out.print(f"URL:      {info.url}", highlight=False)
    out.print(f"Created:  {when(info.created_at)}")


@click.command("open")
@app_option
@click.option("--dashboard", is_flag=True, help="Open the app's page in the dashboard instead.")
def open_app(app: str | None, dashboard: bool) -> None:
    """Print the app's URL (and open it in a browser, where there is one). With --dashboard:
    its page on the dashboard (sign in there with a platform token: kiln tokens:create)."""
    import webbrowser

    client = ApiClient.from_environment()
    if dashboard:
        try:
            url = f"{client.base_url}/ui/apps/{resolve_app(app)}"
        except InvalidInput:  # no app here: the dashboard's list of apps
            url = f"{client.base_url}/ui/"
    else:
        url = client.get(app_path(resolve_app(app)), AppInfo).url or ""
    click.echo(url)
    if url:
        webbrowser.open(url)


@click.command("apps:destroy")
@click.argument("name", required=False)
@app_option
@click.option("--confirm", metavar="NAME", help="The app's name again, to confirm.")
def apps_destroy(name: str | None, app: str | None, confirm: str | None) -> None:
    """Destroy an app, its releases and config. Cannot be undone."""
    target = resolve_app(name or app)
    if confirm != target:
        raise InvalidInput(
            f"this destroys {target} with all its releases and config, and cannot be undone; "
            f"to proceed, run: kiln apps:destroy {target} --confirm {target}",
            code="confirmation_required",
        )
    ApiClient.from_environment().delete(app_path(target), type(None))
    success(f"Destroyed {target}.", "kiln apps")


COMMANDS = [apps, apps_create, apps_info, apps_destroy, open_app]
