"""What guards Ray itself: its token (made once, private, sent by the control plane) and a temp
dir no other user can enter or plant first."""

import os
import stat
from pathlib import Path

import pytest

from kiln.errors import KilnError
from kiln.run.cluster import ray_environment, ray_headers, ray_temp_dir, ray_token
from kiln.settings import Settings


@pytest.fixture(autouse=True)
def _token_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)


def test_the_token_is_made_once_and_only_the_platform_can_read_it(settings: Settings) -> None:
    token = ray_token(settings)
    path = settings.home / "ray" / "auth_token"
    assert token and len(token) == 64 and ray_token(settings) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ray_headers(settings) == {"Authorization": f"Bearer {token}"}
    env = ray_environment(settings)
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(path)


def test_an_existing_cluster_without_its_token_is_refused_with_what_to_set(
    settings: Settings,
) -> None:
    remote = settings.model_copy(update={"ray_address": "10.0.0.5:6379"})
    with pytest.raises(KilnError, match="set RAY_AUTH_TOKEN"):
        ray_token(remote)


def test_token_auth_can_be_turned_off_explicitly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ray_token(settings) is None and ray_headers(settings) == {}
    assert ray_environment(settings)["RAY_AUTH_MODE"] == "disabled"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another uid to plant the directory")
def test_a_temp_dir_someone_else_made_first_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    planted = ray_temp_dir(home).parent
    os.chown(planted, 4242, 4242)
    try:
        with pytest.raises(KilnError, match="is not a directory owned by this platform's user"):
            ray_temp_dir(home)
    finally:
        planted.rmdir()
    made = ray_temp_dir(home).parent
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    made.rmdir()
