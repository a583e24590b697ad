"""A slug dyno started early, while its replica's worker imports Serve (kiln.run.early): from the
config Serve keeps, exactly as the supervisor would start it, and only where that is safe."""

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from ray.serve.schema import ServeApplicationSchema

from kiln.engine import DockerEngine
from kiln.manifest import parse_manifest
from kiln.models import Artifact, ArtifactKind
from kiln.run import early
from kiln.run.depot import COMPLETE
from kiln.run.serve_config import Deployable, application_config
from kiln.run.spec import DynoSpec
from kiln.settings import Settings
from kiln.store import Store
from kiln.vault import Vault
from tests.run.test_dyno import echo_image
from tests.support.dynos import wait_healthy

NAME = "SERVE_REPLICA::shop#dyno#ab12cd34"
REPLICA = "dyno.ab12cd"
# The dyno: says hello, then answers nothing (the tests look at the process, not HTTP).
DYNO = "import os, time; print('hello from', os.environ['KILN_DYNO'], os.environ['SECRET']); time.sleep(60)"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> Vault:
    secret = Fernet.generate_key()
    monkeypatch.setenv("KILN_SECRET_KEY", secret.decode())
    return Vault([secret])


def slug(root: Path, *, whole: bool = True) -> Artifact:
    """A slug directory as a build leaves it: the app, slug.json naming its virtualenv, marks."""
    reference, venv = root / "slug", root / "venv"
    (reference / "app").mkdir(parents=True)
    venv.mkdir()
    (reference / "slug.json").write_text(json.dumps({"venv": str(venv)}))
    for done in (reference, venv) if whole else (venv,):
        (done / COMPLETE).touch()
    return Artifact(kind=ArtifactKind.SLUG, reference=str(reference), digest="sha256:" + "a" * 64,
                    runtime="python", command=[sys.executable, "-c", DYNO])  # fmt: skip


def checkpoint(
    vault: Vault, artifact: Artifact, manifest: str = "", app: str = "shop",
    registry: str | None = None,
) -> bytes:  # fmt: skip
    """Serve's controller's checkpoint of a config the platform applied, as the controller
    writes it: each application through Serve's own schema, dumped, pickled."""
    item = Deployable(app, 7, artifact, vault.seal({"SECRET": "s3"}), parse_manifest(manifest))
    config = application_config(item, log_dir="/tmp/logs", docker_host=None, registry=registry)
    assert config is not None
    dumped = ServeApplicationSchema.model_validate(config).model_dump(exclude_unset=True)
    return pickle.dumps((time.time(), None, None, {app: dumped}))


def spec_of(stored: bytes, app: str = "shop") -> DynoSpec:
    config = early.applied(stored, app)
    assert config is not None
    return DynoSpec.model_validate(config["args"]["spec"])


def mine(stored: bytes, replica: str = REPLICA) -> Any:
    """The dyno the supervisor of ``replica`` would start for the checkpoint's release."""
    return early.dyno_for(spec_of(stored), replica, None, [], None, print)


def adopt(started: early.Early, *args: Any) -> early.Early | None:
    """The supervisor's adopt(), with ``started`` as this worker's early dyno (as the import
    hook leaves it)."""
    early._early = started
    return early.adopt(*args)


def test_the_dyno_starts_from_serves_checkpoint_and_the_supervisor_adopts_it(
    tmp_path: Path, key: Vault
) -> None:
    stored = checkpoint(key, slug(tmp_path))
    started = early.start(NAME, stored)
    assert started is not None and started.replica == REPLICA
    try:
        assert started.dyno.alive()
        time.sleep(0.5)  # it prints before anyone adopts it: held, not lost
        lines: list[str] = []
        adopted = adopt(started, REPLICA, mine(stored), lines.append)
        assert adopted is started
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines == [f"hello from {REPLICA} s3"]  # its name, and its config var, opened
        assert started.dyno.env["KILN_RELEASE"] == "v7"
        assert early.adopt(REPLICA, mine(stored), print) is None  # adopted once, not again
        assert started.dyno.alive()
    finally:
        started.dyno.stop(5)


def test_a_dyno_the_supervisor_would_start_otherwise_is_stopped(tmp_path: Path, key: Vault) -> None:
    stored = checkpoint(key, slug(tmp_path))
    started = early.start(NAME, stored)
    assert started is not None
    other = mine(stored)
    other.env = {**other.env, "KILN_RELEASE": "v8"}  # Serve's target moved on since
    try:
        assert adopt(started, REPLICA, other, print) is None
        assert not started.dyno.alive()
    finally:
        started.dyno.stop(5)


def test_adopt_is_once_and_for_its_replica_only(tmp_path: Path, key: Vault) -> None:
    stored = checkpoint(key, slug(tmp_path))
    started = early.start(NAME, stored)
    assert started is not None
    try:
        # Another replica's name: not this dyno (its environment names REPLICA).
        assert adopt(started, "dyno.zz99zz", mine(stored, "dyno.zz99zz"), print) is None
        assert not started.dyno.alive()
        assert early.adopt(REPLICA, mine(stored), print) is None  # nothing left to adopt
    finally:
        started.dyno.stop(5)


def test_describing_an_image_dyno_asks_its_engine_nothing(
    tmp_path: Path, key: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The supervisor describes its own dyno to compare it with one started early, and may never
    # start it: no request to the engine until it does (here none could answer).
    import docker

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    image = Artifact(kind=ArtifactKind.IMAGE, reference="kiln/shop:b1", digest="sha256:" + "b" * 64,
                     runtime="python", command=[])  # fmt: skip
    described = mine(checkpoint(key, image))
    assert early.launch_key(described)[:3] == (
        "container", f"unix://{tmp_path}/no-engine.sock", "kiln/shop:b1",
    )  # fmt: skip
    with pytest.raises(docker.errors.DockerException):
        described.client  # noqa: B018  # made on first use: only then is the engine asked


@pytest.mark.parametrize(
    ("name", "manifest", "whole"),
    [
        ("SERVE_CONTROLLER_ACTOR", "", True),  # not a replica
        ("SERVE_REPLICA::shop#other#ab12cd34", "", True),  # another deployment
        ("SERVE_REPLICA::else#dyno#ab12cd34", "", True),  # an app Serve keeps no config for
        (NAME, '[resources]\ngpu = "any:1"\n', True),  # its GPUs are Ray's to give at placement
        (NAME, "[scaling]\nwarm_spare = true\n", True),  # a spare is claimed, not started
        (NAME, "", False),  # the slug is not whole on this node: the supervisor fetches it
    ],
)
def test_what_does_not_start_early(
    tmp_path: Path, key: Vault, name: str, manifest: str, whole: bool
) -> None:
    artifact = slug(tmp_path, whole=whole)
    if "warm_spare" in manifest:
        artifact = artifact.model_copy(update={"runtime": "llm"})
    started = early.start(name, checkpoint(key, artifact, manifest))
    if started is not None:
        started.dyno.stop(5)
    assert started is None


@pytest.mark.integration
def test_an_image_dyno_starts_early_and_serves(
    engine: DockerEngine, sqlite_store: Store, build_settings: Settings, archive_of: Any,
    key: Vault, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    reference = echo_image(engine, sqlite_store, build_settings, archive_of)
    monkeypatch.setenv("DOCKER_HOST", engine.url)
    # A cluster's node whose engine lacks the image: the supervisor pulls it, then starts it.
    missing = Artifact(kind=ArtifactKind.IMAGE, reference="kiln/none:b1",
                       digest="sha256:" + "b" * 64, runtime="python", command=[])  # fmt: skip
    started = early.start(NAME, checkpoint(key, missing, registry="10.0.0.5:5000"))
    assert started is not None and started.thread is not None
    assert started.wait() == "its image is not on this node yet"
    assert not started.dyno.alive()
    image = Artifact(kind=ArtifactKind.IMAGE, reference=reference, digest="sha256:" + "c" * 64,
                     runtime="python", command=[])  # fmt: skip
    stored = checkpoint(key, image)
    started = early.start(NAME, stored)
    assert started is not None and started.thread is not None
    try:
        assert started.wait() is None
        lines: list[str] = []
        assert adopt(started, REPLICA, mine(stored), lines.append) is started
        wait_healthy(started.dyno.url)
        assert httpx.get(f"{started.dyno.url}/").json() == {"hello": "world"}
        assert started.dyno.env["KILN_DYNO"] == REPLICA and started.dyno.env["SECRET"] == "s3"
    finally:
        started.dyno.stop(10)
    assert engine.client.containers.list(all=True, filters={"name": "kiln-shop-dyno-ab12cd"}) == []


class Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_that_is_not_plain_data_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = pickle.dumps((0.0, None, None, {"shop": Boom()}))
    monkeypatch.chdir(tmp_path)
    assert early.applied(hostile, "shop") is None
    assert early.start(NAME, hostile) is None
    assert not (tmp_path / "PWNED").exists()
    assert early.applied(b"not a pickle", "shop") is None
    assert early.applied(pickle.dumps({"shape": "unknown"}), "shop") is None


def test_held_lines_come_first_and_in_order() -> None:
    held = early._Held()
    for n in range(100):
        held(f"early {n}")
    got: list[str] = []
    writer = threading.Thread(target=lambda: [held(f"late {n}") for n in range(100)])
    writer.start()
    held.hand_to(got.append)
    writer.join()
    assert got[:100] == [f"early {n}" for n in range(100)]
    assert sorted(got[100:], key=lambda s: int(s.split()[1])) == got[100:]
    assert len(got) == 200


STANDALONE = """
import sys, ray
from kiln.run import early
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {"pydantic", "kiln", "ray"}
                      and m.startswith(("pydantic", "kiln.", "ray.serve")))))
"""

EARLY_PATH = """
import pickle, sys
from kiln.run import early
stored = open(sys.argv[1], "rb").read()
started = early.start(sys.argv[2], stored)
assert started is not None
started.dyno.stop(5)
print(" ".join(sorted(m for m in sys.modules if m.startswith(("ray.serve", "aiohttp")))))
"""


def test_every_worker_pays_nothing_and_the_early_path_never_imports_serve(
    tmp_path: Path, key: Vault
) -> None:
    # Every Ray worker imports the module: it costs them nothing but the standard library.
    loaded = subprocess.run([sys.executable, "-c", STANDALONE], capture_output=True, text=True,
                            check=True, timeout=120).stdout.split()  # fmt: skip
    assert loaded == ["kiln.run", "kiln.run.early"], loaded
    # It runs inside the worker's import of Serve: importing Serve (or the supervisor's HTTP
    # client) there would import it twice, or before the dyno starts.
    stored = tmp_path / "checkpoint"
    stored.write_bytes(checkpoint(key, slug(tmp_path)))
    done = subprocess.run([sys.executable, "-c", EARLY_PATH, str(stored), NAME],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], done.stdout
