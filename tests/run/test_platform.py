"""End to end on a real Kiln: real Ray Serve, real dynos, real HTTP through the app's URL."""

import itertools
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from kiln.engine import connect_engine
from tests.support.apps import APPS, EXAMPLES
from tests.support.platform import Load, Platform

pytestmark = pytest.mark.integration


def deploy(platform: Platform, directory: Path, app: str, *extra: str, ok: bool = True) -> str:
    result = platform.kiln("deploy", str(directory), "-a", app, *extra, ok=ok)
    return result.output


def dyno_pids(platform: Platform, app: str) -> list[int]:
    """The dyno processes under the app's replica supervisors."""
    pids = []
    for replica in platform.ps(app)["replicas"]:
        if replica["state"] == "RUNNING" and replica["pid"]:
            pids += [c.pid for c in psutil.Process(replica["pid"]).children() if _is_dyno(c)]
    return pids


def _is_dyno(process: psutil.Process) -> bool:
    try:
        return "kiln_runtime" in " ".join(process.cmdline())
    except psutil.Error:  # gone, or killed and not yet reaped (a zombie): no running dyno
        return False


def test_a_deploy_ends_live_on_its_url(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "echo-live")
    output = deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    assert "-----> v2 is live" in output and f"{platform.app_url(app)}/" in output
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}
    assert httpx.post(f"{platform.app_url(app)}/echo", json={"x": 1}).json() == {"echo": {"x": 1}}
    listing = platform.ps(app)
    assert listing["status"] == "RUNNING" and listing["release"] == 2
    assert [r["state"] for r in listing["replicas"]] == ["RUNNING"]
    releases = platform.kiln("releases", "-a", app, "--json").output
    assert '"status": "succeeded"' in releases

    def logs_with_the_request() -> str | None:
        # Supervisors ship log lines in batches: the router's line for the request comes shortly.
        logs = platform.kiln("logs", "-a", app, "-n", "200").output
        return logs if "GET /echo-live/ 200" in logs else None

    logs = platform.wait("the router's line in the app's log", logs_with_the_request, timeout_s=20)
    assert "router[dyno." in logs
    assert "build[build." in logs and "release[kiln]: v2 is live" in logs
    only_router = platform.kiln("logs", "-a", app, "--source", "router").output
    assert only_router and all(" router[" in line for line in only_router.strip().splitlines())


def test_config_changes_roll_out_without_a_failed_request(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "rolling")
    deploy(platform, APPS / "streams_sse", app, "--artifact", "slug")
    with Load(f"{platform.app_url(app)}/").running() as load:
        platform.kiln("config:set", "-a", app, "GREETING=v3")
        platform.wait(
            "v3 to serve", lambda: httpx.get(f"{platform.app_url(app)}/").json()["greeting"] == "v3"
        )
        platform.wait(
            "v3 to succeed",
            lambda: (
                '"succeeded"' in platform.kiln("releases:info", "v3", "-a", app, "--json").output
            ),
        )
    assert load.failures == {} and load.results[200] > 10


def test_a_release_that_crashes_on_start_fails_and_the_old_one_keeps_serving(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "crashy")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    with Load(f"{platform.app_url(app)}/", pause_s=0.2).running() as load:
        output = deploy(platform, APPS / "crash_on_start", app, "--artifact", "slug", ok=False)
    assert " !     v3 failed to start; the previous release keeps serving." in output
    assert "KeyError: 'DATABASE_URL_THAT_IS_NOT_SET'" in output
    assert load.failures == {} and load.results[200] > 5
    info = platform.kiln("releases:info", "v3", "-a", app).output
    assert "Status:      failed" in info and "exited with code 1 before it was ready" in info
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}
    # Rollback makes a new release from the good one, explicitly.
    assert "Rollback to v2: release v4" in platform.kiln("rollback", "-a", app).output
    platform.wait(
        "v4 to go live",
        lambda: '"succeeded"' in platform.kiln("releases:info", "v4", "-a", app, "--json").output,
    )
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}


def test_a_killed_dyno_is_restarted_in_place_under_load(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "phoenix")
    deploy(platform, APPS / "streams_sse", app, "--artifact", "slug")
    [before] = dyno_pids(platform, app)
    with Load(f"{platform.app_url(app)}/", threads=2).running() as load:
        time.sleep(0.5)
        os.kill(before, signal.SIGKILL)
        platform.wait(
            "a new dyno",
            lambda: (pids := dyno_pids(platform, app)) and pids != [before],
            timeout_s=20,
            every_s=0.2,
        )
        time.sleep(0.5)
    assert load.failures == {}, load.results
    assert httpx.get(f"{platform.app_url(app)}/").json()["pid"] != before
    assert (
        "exited with code -9; restarting in place"
        in platform.kiln("logs", "-a", app, "--source", "dyno").output
    )


def test_scale_to_zero_and_back_answers_every_request(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
    tmp_path: Path,
) -> None:
    app = fresh_app(platform, "sleepy")
    source = tmp_path / "sleepy"
    shutil.copytree(APPS / "streams_sse", source)
    (source / "kiln.toml").write_text(
        "[scaling]\nmin_replicas = 0\nmax_replicas = 2\nupscale_delay_s = 0\n"
        "downscale_delay_s = 1\ndownscale_to_zero_delay_s = 2\n"
    )
    deploy(platform, source, app, "--artifact", "slug")
    platform.wait("zero replicas", lambda: not platform.ps(app)["replicas"], timeout_s=90)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: (
                    httpx.get(f"{platform.app_url(app)}/slow?seconds=0.2", timeout=120).status_code
                ),
                range(16),
            )
        )
    assert answers == [200] * 16
    assert platform.ps(app)["replicas"]
    platform.wait("zero again", lambda: not platform.ps(app)["replicas"], timeout_s=90)


def test_scale_sets_a_fixed_count(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "scaled")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    platform.kiln("scale", "2", "-a", app)
    platform.wait(
        "two running", lambda: [r["state"] for r in platform.ps(app)["replicas"]] == ["RUNNING"] * 2
    )
    platform.kiln("scale", "0", "-a", app)
    platform.wait("no application", lambda: platform.ps(app)["status"] == "STOPPED")
    assert httpx.get(f"{platform.app_url(app)}/").status_code == 404


def test_server_sent_events_stream_through_the_url_chunk_by_chunk(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "stream")
    deploy(platform, APPS / "streams_sse", app, "--artifact", "slug")
    arrivals = []
    with (
        httpx.Client() as client,
        client.stream("GET", f"{platform.app_url(app)}/events?n=4&gap=0.4") as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    gaps = [b - a for a, b in itertools.pairwise(arrivals)][:3]
    assert all(gap > 0.25 for gap in gaps), gaps  # each event came when it was sent


def test_the_control_plane_restarts_while_apps_keep_serving(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    app = fresh_app(platform, "steady")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    pid = int((platform.home / "run" / "kiln.pid").read_text())
    with Load(f"{platform.app_url(app)}/", pause_s=0.1).running() as load:
        os.kill(pid, signal.SIGTERM)
        platform.wait(
            "the control plane to stop",
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        )
        time.sleep(1)
        platform.up()  # Ray is already up: the reconciler converges without redeploying
        time.sleep(3)
    assert load.failures == {} and load.results[200] > 10
    assert [r["state"] for r in platform.ps(app)["replicas"]] == ["RUNNING"]


def test_an_image_release_runs_as_a_container(
    platform: Platform,
    fresh_app: Callable[[Platform, str], str],
) -> None:
    if connect_engine(platform.env.get("DOCKER_HOST")) is None:
        if os.environ.get("KILN_REQUIRE_ENGINE") == "1":
            pytest.fail("KILN_REQUIRE_ENGINE=1 but no container engine answers at DOCKER_HOST")
        pytest.skip("no container engine at DOCKER_HOST")
    app = fresh_app(platform, "boxed")
    output = deploy(platform, EXAMPLES / "echo", app, "--artifact", "image")
    assert "Building image kiln/boxed:b" in output and "-----> v2 is live" in output
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}


def test_git_push_ends_with_a_url_that_answers(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import json
    import subprocess

    app = fresh_app(platform, "pushy")
    repo = tmp_path / "pushy"
    shutil.copytree(APPS / "streams_sse", repo)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    token = json.loads((platform.home / "credentials.json").read_text())["token"]
    url = f"http://kiln:{token}@127.0.0.1:{platform.ports['api']}/git/{app}.git"
    pushed = subprocess.run(
        ["git", "push", url, "main"], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert pushed.returncode == 0, pushed.stderr
    assert (
        "remote: -----> v2 is live" in pushed.stderr
        and f"{platform.app_url(app)}/" in pushed.stderr
    )
    assert httpx.get(f"{platform.app_url(app)}/").json()["release"] == "v2"


def test_api_keys_guard_the_url_and_revocation_is_fast(
    platform: Platform, fresh_app: Callable[[Platform, str], str]
) -> None:
    import json

    app = "guarded"
    platform.kiln("apps:create", app)  # not --public: the api-keys add-on is attached
    try:
        deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
        url = f"{platform.app_url(app)}/"
        assert httpx.get(url).status_code == 401
        key = json.loads(platform.kiln("keys:create", "-a", app, "--name", "ci", "--json").output)[
            "key"
        ]
        other_app = fresh_app(platform, "other-app")
        other_key = json.loads(platform.kiln("keys:create", "-a", other_app, "--json").output)[
            "key"
        ]
        auth = {"Authorization": f"Bearer {key}"}
        platform.wait(
            "the key to work",
            lambda: httpx.get(url, headers=auth).status_code == 200,
            timeout_s=10,
            every_s=0.1,
        )
        assert httpx.get(url, headers={"Authorization": f"Bearer {other_key}"}).status_code == 401
        assert (
            httpx.get(url, headers={"Authorization": "Bearer kiln_key_garbage"}).json()["error"][
                "code"
            ]
            == "invalid_key"
        )
        for _ in range(5):
            assert httpx.get(url, headers=auth).status_code == 200
        platform.kiln("keys:revoke", key[:15], "-a", app)
        revoked = time.monotonic()
        platform.wait(
            "revocation",
            lambda: httpx.get(url, headers=auth).status_code == 401,
            timeout_s=10,
            every_s=0.05,
        )
        assert time.monotonic() - revoked < 2.0
        listed = platform.wait(
            "usage to be counted",
            lambda: (
                (keys := json.loads(platform.kiln("keys", "-a", app, "--json").output))
                and keys[0]["requests"] >= 6
                and keys
            ),
            timeout_s=15,
        )
        assert listed[0]["revoked"] is True and listed[0]["last_used_at"] is not None
        logs = platform.kiln("logs", "-a", app, "-n", "1000").output
        assert (
            key not in logs
            and key not in (platform.home / "logs" / "apps" / f"{app}.jsonl").read_text()
        )
    finally:
        platform.kiln("apps:destroy", app, "--confirm", app, ok=False)


def test_the_rag_example_end_to_end(
    platform: Platform, fresh_app: Callable[[Platform, str], str]
) -> None:
    """examples/rag: its kiln.toml attaches api-keys and a vector store at the first deploy; a
    real embeddings model fills the store and answers with the nearest passages."""
    import json

    app = fresh_app(platform, "rag")  # --public: api-keys comes from kiln.toml at the deploy
    output = deploy(platform, EXAMPLES / "rag", app, "--artifact", "slug")
    assert "Attached the vector-store add-on (kiln.toml): sets KILN_VECTOR_URL" in output
    assert "Attached the api-keys add-on (kiln.toml)" in output
    addons = json.loads(platform.kiln("addons", "-a", app, "--json").output)
    assert sorted(a["kind"] for a in addons) == ["api-keys", "vector-store"]
    key = json.loads(platform.kiln("keys:create", "-a", app, "--json").output)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    url = platform.app_url(app)
    platform.wait(
        "the key",
        lambda: httpx.get(f"{url}/healthz", headers=auth).status_code == 200,
        timeout_s=10,
    )
    documents = [
        {
            "text": "The Eiffel Tower is in Paris, the capital of France.",
            "metadata": {"topic": "travel"},
        },
        {
            "text": "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
            "metadata": {"topic": "biology"},
        },
        {
            "text": "A GPU runs thousands of threads in parallel for matrix arithmetic.",
            "metadata": {"topic": "computing"},
        },
    ]
    stored = httpx.post(f"{url}/documents", json={"documents": documents}, headers=auth, timeout=60)
    assert stored.status_code == 200 and stored.json()["stored"] == 3
    answer = httpx.post(
        f"{url}/ask",
        json={"question": "How do plants make food from light?", "k": 2},
        headers=auth,
        timeout=60,
    ).json()
    assert answer["passages"][0]["text"].startswith("Photosynthesis")
    filtered = httpx.post(
        f"{url}/ask",
        json={"question": "Paris", "k": 3, "filter": {"topic": "computing"}},
        headers=auth,
        timeout=60,
    ).json()
    assert [p["text"][:5] for p in filtered["passages"]] == ["A GPU"]
    assert "KILN_VECTOR_URL" in platform.kiln("config", "-a", app, "--json").output
    destroyed = platform.kiln("addons:destroy", "vector-store", "-a", app, "--confirm", app).output
    assert "Destroyed vector-store" in destroyed
    assert "KILN_VECTOR_URL" not in platform.kiln("config", "-a", app, "--json").output


def test_an_llm_app_from_the_hub_answers_the_openai_client(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import json

    import openai

    app = fresh_app(platform, "tiny-llm")
    source = tmp_path / "tiny-llm"
    source.mkdir()
    (source / "kiln.toml").write_text(
        'runtime = "llm"\nmodel = "kiln-test/tiny-llama@main"\n[scaling]\nmin_replicas = 1\nmax_replicas = 1\n'
    )
    output = deploy(platform, source, app, "--artifact", "slug")
    assert "-----> Release phase: fetching kiln-test/tiny-llama@main into the model cache" in output
    assert "-----> v2 is live" in output
    client = openai.OpenAI(
        base_url=f"{platform.app_url(app)}/v1", api_key="public-app", max_retries=0
    )
    assert [m.id for m in client.models.list()] == ["kiln-test/tiny-llama"]
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert reply.choices[0].message.content is not None and reply.usage is not None
    stream = client.completions.create(
        model="tiny", prompt="ray", max_tokens=6, stream=True, temperature=0
    )
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    # A client that hangs up mid-stream: through HAProxy, Serve and the supervisor, the dyno
    # hears of it and stops generating.
    body = {"prompt": "hello kiln", "max_tokens": 400, "temperature": 0, "stream": True}
    url = f"{platform.app_url(app)}/v1/completions"
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert next(response.iter_lines()).startswith("data: ")
    platform.wait(
        "the dyno to stop generating for the client that left",
        lambda: "the client hung up after" in platform.kiln("logs", "-a", app, "-n", "200").output,
        timeout_s=20,
    )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])
    models = json.loads(platform.kiln("models", "--json").output)
    assert any(m["repo_id"] == "kiln-test/tiny-llama" and app in m["used_by"] for m in models)
    release_log = platform.kiln("logs", "-a", app, "--source", "release", "-n", "500").output
    assert "Release phase: fetching kiln-test/tiny-llama@main" in release_log


def test_a_model_the_hub_lacks_fails_the_release_and_the_app_keeps_serving(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    app = fresh_app(platform, "no-model")
    deploy(platform, EXAMPLES / "echo", app, "--artifact", "slug")
    source = tmp_path / "no-model"
    source.mkdir()
    (source / "kiln.toml").write_text('runtime = "llm"\nmodel = "kiln-test/not-on-the-hub"\n')
    output = deploy(platform, source, app, "--artifact", "slug", ok=False)
    assert "the model kiln-test/not-on-the-hub was not found on the hub" in output
    assert httpx.get(f"{platform.app_url(app)}/").json() == {"hello": "world"}


def test_an_embeddings_app_answers_the_openai_client(
    platform: Platform, fresh_app: Callable[[Platform, str], str], tmp_path: Path
) -> None:
    import openai

    app = fresh_app(platform, "embed")
    source = tmp_path / "embed"
    source.mkdir()
    (source / "kiln.toml").write_text(
        'runtime = "embeddings"\nmodel = "sentence-transformers/all-MiniLM-L6-v2"\n'
    )
    deploy(platform, source, app, "--artifact", "slug")
    client = openai.OpenAI(
        base_url=f"{platform.app_url(app)}/v1", api_key="public-app", max_retries=0
    )
    result = client.embeddings.create(model="minilm", input=["hello", "world"])
    assert [len(d.embedding) for d in result.data] == [384, 384]
