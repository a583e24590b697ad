"""The CLI against a live control plane on loopback: what a user types and what they read."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

Kiln = Callable[..., Result]


def test_apps_create_list_info_destroy(kiln: Kiln) -> None:
    created = kiln("apps:create", "chat").output
    assert "Created chat (v1)." in created and "Next: kiln config:set -a chat" in created
    assert "chat" in kiln("apps").output
    assert json.loads(kiln("apps", "--json").output)[0]["name"] == "chat"
    assert "Release:  v1" in kiln("apps:info", "-a", "chat").output
    refused = kiln("apps:destroy", "chat", ok=False)
    assert "kiln apps:destroy chat --confirm chat" in refused.output
    kiln("apps:destroy", "chat", "--confirm", "chat")
    assert json.loads(kiln("apps", "--json").output) == []


def test_config_set_get_unset_and_releases(kiln: Kiln) -> None:
    kiln("apps:create", "chat")
    assert "release v2" in kiln("config:set", "-a", "chat", "A=1", "B=two words").output
    assert kiln("config:get", "A", "-a", "chat").output == "1\n"
    assert json.loads(kiln("config", "-a", "chat", "--json").output) == {"A": "1", "B": "two words"}
    assert "B='two words'" in kiln("config", "-a", "chat", "--shell").output
    assert "release v3" in kiln("config:unset", "A", "-a", "chat").output
    assert "No change" in kiln("config:unset", "A", "-a", "chat").output
    listing = json.loads(kiln("releases", "-a", "chat", "--json").output)
    assert [r["version"] for r in listing] == [3, 2, 1]
    info = kiln("releases:info", "v2", "-a", "chat").output
    assert "Set A, B config vars" in info and "Config vars: A, B" in info


def test_the_app_comes_from_kiln_toml(
    kiln: Kiln, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kiln("apps:create", "fromtoml")
    (tmp_path / "kiln.toml").write_text('name = "fromtoml"\n')
    monkeypatch.chdir(tmp_path)
    assert "=== fromtoml" in kiln("apps:info").output


@pytest.mark.parametrize(
    ("args", "message"),
    [(("apps:create", "Bad_Name"), "invalid app name 'Bad_Name'"),
     (("apps:info", "-a", "ghost"), "app ghost not found"),
     (("config:set", "-a", "ghost", "A=1"), "app ghost not found"),
     (("config:set", "-a", "x1x", "NOEQUALS"), "'NOEQUALS' is not KEY=VALUE"),
     (("releases:info", "three", "-a", "x1x"), "'three' is not a release version"),
     (("config",), "no app given: pass -a APP")],
)  # fmt: skip
def test_errors_print_one_line_without_traceback(
    kiln: Kiln, args: tuple[str, ...], message: str
) -> None:
    result = kiln(*args, ok=False)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert result.output.startswith("Error: ")


def test_config_key_errors_come_from_the_server(kiln: Kiln) -> None:
    kiln("apps:create", "chat")
    result = kiln("config:set", "-a", "chat", "1BAD=x", ok=False)
    assert "invalid config var name '1BAD'" in result.output


def test_debug_shows_the_traceback(kiln: Kiln) -> None:
    result = kiln("--debug", "apps:info", "-a", "ghost", ok=False)
    assert "Traceback" in result.output and "app ghost not found" in result.output


def test_a_wrong_token_is_refused(kiln: Kiln, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_TOKEN", "kiln_tok_wrong")
    assert "invalid platform token" in kiln("apps", ok=False).output


def test_an_unreachable_api_says_how_to_start_it(
    kiln: Kiln, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_API_URL", "http://127.0.0.1:9")
    assert "Start it with kiln up" in kiln("apps", ok=False).output


def test_tokens_create_list_revoke(kiln: Kiln) -> None:
    made = json.loads(kiln("tokens:create", "ci", "--json").output)
    listing = kiln("tokens").output
    assert "ci" in listing and made["token"] not in listing
    assert f"Revoked token {made['id']}" in kiln("tokens:revoke", str(made["id"])).output


def test_a_deploy_token_for_one_app(kiln: Kiln, monkeypatch: pytest.MonkeyPatch) -> None:
    kiln("apps:create", "chat")
    kiln("apps:create", "other")
    made = json.loads(
        kiln("tokens:create", "ci", "--app", "chat", "--expires", "90d", "--json").output
    )
    assert made["scope"] == "deploy" and made["apps"] == ["chat"] and made["expires_at"]
    assert "deploy" in kiln("tokens").output
    monkeypatch.setenv("KILN_TOKEN", made["token"])
    assert kiln("config:set", "-a", "chat", "A=1").exit_code == 0
    refused = kiln("config:set", "-a", "other", "A=1", ok=False).output
    assert "the token ci (deploy) is for chat only, not other" in refused


def test_status(kiln: Kiln) -> None:
    output = kiln("status").output
    assert "Version: 0.1.0" in output and "Store:   sqlite" in output


def test_ps_writes_each_dyno_gpu_as_type_memory_and_use() -> None:
    from kiln.cli.ps import _gpus
    from kiln.models import ReplicaGpu

    h100 = ReplicaGpu(uuid="GPU-0", name="NVIDIA H100 80GB HBM3", memory_used=12 * 2**30,
                      memory_total=80 * 2**30, utilization=45)  # fmt: skip
    assert _gpus([h100]) == "H100 12.0/80.0 GiB 45%"
    assert _gpus([h100.model_copy(update={"utilization": None})]) == "H100 12.0/80.0 GiB"
    assert _gpus([]) == "-"
