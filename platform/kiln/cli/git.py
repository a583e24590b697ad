"""``kiln git:remote`` (add the ``kiln`` remote and its credential helper) and
``kiln git:credential`` (git's credential-helper protocol, answering with the platform token)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from kiln.cli.options import app_option, resolve_app
from kiln.cli.output import success
from kiln.credentials import read_credentials
from kiln.errors import InvalidInput

REMOTE = "kiln"


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def in_git_repo(directory: Path | None = None) -> bool:
    return _git("rev-parse", "--git-dir", cwd=directory).returncode == 0


def remote_url(app: str) -> str:
    return f"{read_credentials().api_url.rstrip('/')}/git/{app}.git"


def add_remote(app: str, remote: str = REMOTE, directory: Path | None = None) -> str:
    """Point ``remote`` at the app's repository (no secret in the URL) and make git ask Kiln
    for the password."""
    url = remote_url(app)
    verb = "set-url" if _git("remote", "get-url", remote, cwd=directory).returncode == 0 else "add"
    result = _git("remote", verb, remote, url, cwd=directory)
    if result.returncode != 0:
        raise InvalidInput(f"git remote {verb} failed: {result.stderr.strip()}", code="git_failed")
    parts = urlsplit(url)
    helper = f"!{shlex.quote(sys.executable)} -m kiln git:credential"
    _git("config", f"credential.{parts.scheme}://{parts.netloc}.helper", helper, cwd=directory)
    return url


@click.command("git:remote")
@app_option
@click.option("-r", "--remote", default=REMOTE, show_default=True, help="The remote's name.")
def git_remote(app: str | None, remote: str) -> None:
    """Add a git remote for the app, so `git push kiln main` deploys it."""
    if not in_git_repo():
        raise InvalidInput(
            "this is not a git repository; run git init first (or cd into one)", code="not_git"
        )
    name = resolve_app(app)
    url = add_remote(name, remote)
    success(f"Git remote {remote} -> {url}", f"git push {remote} main")


@click.command("git:credential", hidden=True)
@click.argument("action")
def git_credential(action: str) -> None:
    """git's credential helper protocol: on `get`, answer with the platform token."""
    if action != "get":
        return  # store / erase: the token lives in Kiln's credentials, not in git
    asked = dict(line.split("=", 1) for line in sys.stdin.read().splitlines() if "=" in line)
    credentials = read_credentials()
    ours = urlsplit(credentials.api_url)
    if asked.get("host") != ours.netloc or not credentials.token:
        return
    click.echo(f"username=kiln\npassword={credentials.token}")


COMMANDS = [git_remote, git_credential]
