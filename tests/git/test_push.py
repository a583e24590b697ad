"""git push deploys, with the real git client over loopback smart HTTP."""

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiln.cli.main import cli
from kiln.git.repos import repo_path
from tests.conftest import LiveApi
from tests.support.apps import APPS, EXAMPLES

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GIT_ENV}
    result = subprocess.run(
        ["git", "-c", "credential.helper=", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def repo_of(source: Path, tmp_path: Path, name: str = "work") -> Path:
    repo = tmp_path / name
    shutil.copytree(source, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    return repo


def remote(api: LiveApi, app: str, token: str | None = None) -> str:
    host = api.url.removeprefix("http://")
    return f"http://kiln:{token or api.token}@{host}/git/{app}.git"


@pytest.fixture
def app(slug_api: LiveApi) -> str:
    slug_api.store.create_app("pushed", actor="t")
    return "pushed"


def test_a_push_builds_releases_and_records_the_commit(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    pushed = git(repo, "push", remote(slug_api, app), "main")
    assert "remote: -----> Detected a python app (main:app)" in pushed.stderr
    assert (
        "remote: -----> Released v2" in pushed.stderr
        and "* [new branch]      main -> main" in pushed.stderr
    )
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    release = slug_api.store.get_release(app, 2)
    assert release.commit == head and slug_api.store.builds.list(app)[0].commit == head
    (repo / "main.py").write_text((repo / "main.py").read_text() + "\nVERSION = 2\n")
    git(repo, "commit", "-qam", "second")
    assert "-----> Released v3" in git(repo, "push", remote(slug_api, app), "main").stderr


def test_a_broken_push_is_rejected_and_changes_nothing(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    git(repo, "push", remote(slug_api, app), "main")
    good = git(repo, "rev-parse", "HEAD").stdout.strip()
    shutil.copy(APPS / "missing_requirement" / "requirements.txt", repo / "requirements.txt")
    git(repo, "commit", "-qam", "broken")
    pushed = git(repo, "push", remote(slug_api, app), "main", check=False)
    assert pushed.returncode != 0
    assert (
        "remote:  !     Build failed: could not install the dependencies from requirements.txt"
        in pushed.stderr
    )
    assert "! [remote rejected] main -> main (pre-receive hook declined)" in pushed.stderr
    assert git(repo, "ls-remote", remote(slug_api, app), "main").stdout.split()[0] == good
    assert slug_api.store.get_app(app).release == 2


def test_without_a_token_nothing_is_read_or_written(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    bare = f"{slug_api.url}/git/{app}.git"
    refused = git(repo, "push", bare, "main", check=False)
    assert refused.returncode != 0 and "could not read Username" in refused.stderr
    wrong = git(repo, "push", remote(slug_api, app, token="kiln_tok_wrong"), "main", check=False)
    assert (
        "Authentication failed" in wrong.stderr and "platform token as the password" in wrong.stderr
    )
    assert git(repo, "ls-remote", remote(slug_api, app)).stdout == ""  # nothing was written
    cloned = git(tmp_path, "clone", bare, "clone", check=False)
    assert cloned.returncode != 0


def test_a_token_for_reading_or_for_another_app_cannot_push(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    from kiln.models import TokenScope

    store = slug_api.store
    store.create_app("neighbour", actor="t")
    reader = store.create_token("r", scope=TokenScope.READ, apps=[app]).token
    neighbour = store.create_token("n", scope=TokenScope.DEPLOY, apps=["neighbour"]).token
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    git(repo, "push", remote(slug_api, app), "main")  # an admin's push: something to read
    for token in (reader, neighbour):
        refused = git(repo, "push", remote(slug_api, app, token), "main:master", check=False)
        assert refused.returncode != 0 and "403" in refused.stderr, refused.stderr
    assert git(tmp_path, "clone", remote(slug_api, app, reader), "read").returncode == 0
    assert (
        git(tmp_path, "clone", remote(slug_api, app, neighbour), "n", check=False).returncode != 0
    )
    assert [b.commit for b in store.builds.list(app)] == [
        git(repo, "rev-parse", "HEAD").stdout.strip()
    ]


def test_a_commit_whose_link_points_outside_is_refused(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    (repo / "secrets.txt").symlink_to("/etc/passwd")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "leak")
    pushed = git(repo, "push", remote(slug_api, app), "main", check=False)
    assert pushed.returncode != 0
    assert "'secrets.txt' is a link to '/etc/passwd', outside the app" in pushed.stderr


def test_other_branches_are_refused_saying_which_deploys(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    pushed = git(repo, "push", remote(slug_api, app), "main:feature", check=False)
    assert (
        "Kiln deploys only the main (or master) branch; refs/heads/feature was not pushed."
        in pushed.stderr
    )
    assert "git push kiln HEAD:main" in pushed.stderr
    assert git(repo, "push", remote(slug_api, app), "main:master").returncode == 0


def test_a_force_push_of_an_old_commit_rolls_back(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    git(repo, "push", remote(slug_api, app), "main")
    old = git(repo, "rev-parse", "HEAD").stdout.strip()
    (repo / "main.py").write_text((repo / "main.py").read_text() + "\nNEW = True\n")
    git(repo, "commit", "-qam", "new")
    git(repo, "push", remote(slug_api, app), "main")
    git(repo, "reset", "-q", "--hard", old)
    forced = git(repo, "push", "--force", remote(slug_api, app), "main")
    assert "forced update" in forced.stderr and "-----> Released v4" in forced.stderr
    assert slug_api.store.get_release(app, 4).commit == old


def test_a_large_history_uploads_in_chunks(slug_api: LiveApi, app: str, tmp_path: Path) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    for i in range(3):  # 3 MiB of incompressible history (the limit here is 4); small tree
        (repo / "blob.bin").write_bytes(os.urandom(2**20))
        git(repo, "add", "blob.bin")
        git(repo, "commit", "-qm", f"blob {i}")
    git(repo, "rm", "-q", "blob.bin")
    git(repo, "commit", "-qm", "drop the blob")
    pushed = git(repo, "-c", "http.postBuffer=1048576", "push", remote(slug_api, app), "main")
    assert "-----> Released v2" in pushed.stderr


def test_a_push_past_the_upload_limit_is_refused_and_changes_nothing(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    repo = repo_of(EXAMPLES / "echo", tmp_path)
    (repo / "weights.bin").write_bytes(os.urandom(6 * 2**20))  # the limit here is 4 MiB
    git(repo, "add", "weights.bin")
    git(repo, "commit", "-qm", "weights")
    pushed = git(repo, "push", remote(slug_api, app), "main", check=False)
    assert pushed.returncode != 0
    assert git(repo, "ls-remote", remote(slug_api, app)).stdout == ""
    assert slug_api.store.builds.list(app) == []


def test_two_pushes_at_once_run_in_turn_and_the_repository_stays_sound(
    slug_api: LiveApi, app: str, tmp_path: Path
) -> None:
    first = repo_of(EXAMPLES / "echo", tmp_path, "first")
    git(first, "push", remote(slug_api, app), "main")
    second = tmp_path / "second"
    git(tmp_path, "clone", "-q", remote(slug_api, app), str(second))
    for repo, text in ((first, "A"), (second, "B")):
        (repo / "main.py").write_text((repo / "main.py").read_text() + f"\nWHO = {text!r}\n")
        git(repo, "commit", "-qam", text)
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [threading.Thread(target=lambda r=r, n=n: results.__setitem__(n, git(r, "push", remote(slug_api, app), "main", check=False)))
               for n, r in (("first", first), ("second", second))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = sorted(r.returncode == 0 for r in results.values())
    assert outcomes == [False, True]  # one lands; the other is told the branch moved
    loser = next(r for r in results.values() if r.returncode != 0)
    assert "moved while this push waited" in loser.stderr or "fetch first" in loser.stderr
    bare = repo_path(slug_api.settings.home, app)  # the repository is intact
    assert (
        subprocess.run(["git", "fsck", "--strict"], cwd=bare, capture_output=True).returncode == 0
    )
    winner = next(r for r in results.values() if r.returncode == 0)
    assert "-----> Released v3" in winner.stderr and slug_api.store.get_app(app).release == 3


def test_git_remote_sets_up_push_with_the_stored_token(
    slug_api: LiveApi, app: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repo_of(APPS / "streams_sse", tmp_path)  # no kiln.toml: the app comes from the remote
    monkeypatch.chdir(repo)
    monkeypatch.setenv("KILN_API_URL", slug_api.url)
    monkeypatch.setenv("KILN_TOKEN", slug_api.token)
    result = CliRunner().invoke(cli, ["git:remote", "-a", app])
    assert (
        result.exit_code == 0
        and f"Git remote kiln -> {slug_api.url}/git/{app}.git" in result.output
    )
    assert (
        slug_api.token not in git(repo, "remote", "get-url", "kiln").stdout
    )  # no secret in the URL
    env = {**os.environ, **GIT_ENV}
    pushed = subprocess.run(
        ["git", "push", "kiln", "main"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "-----> Released v2" in pushed.stderr
    info = CliRunner().invoke(cli, ["apps:info"])  # the app comes from the kiln remote
    assert f"=== {app}" in info.output


def test_requests_at_once_set_up_the_repository_without_tripping_over_its_config(
    tmp_path: Path,
) -> None:
    # Every git request makes sure of the repository; two writers of its config at once made
    # git refuse one ("could not lock config file") and that push got a 500.
    from kiln.git.repos import ensure_repo

    ensure_repo(tmp_path, "race", 1000)
    failures: list[BaseException] = []

    def request(limit: int) -> None:
        try:
            ensure_repo(tmp_path, "race", limit)
        except BaseException as exc:  # collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=request, args=(2000 + i % 2,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
