"""Process dynos: the slug's command with $PORT on loopback, output captured, stopped on demand,
and never outliving their supervisor."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln.builds.image import ImageBuilder
from kiln.engine import DockerEngine
from kiln.models import ArtifactKind
from kiln.run.dyno import ContainerDyno, ContainerLimits, ProcessDyno, gpu_environment
from kiln.run.sockets import PinnedSocket
from kiln.settings import Settings
from kiln.store import Store
from tests.support.apps import EXAMPLES
from tests.support.dynos import wait_healthy
from tests.support.fixtures import deployer

SERVER = textwrap.dedent(
    """
    import os, http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(os.environ["SECRET"].encode())
        def log_message(self, *a): pass
    print("listening", flush=True)
    http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
    """
)


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_process_dyno_serves_on_its_port_and_stops(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    lines: list[str] = []
    dyno = ProcessDyno(
        [sys.executable, "server.py"],
        tmp_path,
        {"SECRET": "s3", "PATH": os.environ["PATH"]},
        lines.append,
    )
    dyno.start()
    wait_up(dyno.url)
    assert dyno.url.startswith("http://127.0.0.1:") and httpx.get(dyno.url).text == "s3"
    assert dyno.alive() and "listening" in dyno.recent_lines()
    dyno.stop(timeout_s=5)
    assert not dyno.alive() and dyno.exit_code() is not None


def test_a_dyno_dies_with_its_supervisor(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    supervisor = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from kiln.run.dyno import ProcessDyno
        dyno = ProcessDyno([sys.executable, "server.py"], Path({str(tmp_path)!r}), {{"SECRET": "x"}}, print)
        dyno.start()
        print(dyno._process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", supervisor], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)  # no cleanup code runs
    parent.wait()
    deadline = time.monotonic() + 5
    while (
        Path(f"/proc/{child}").exists()
        and Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
    ):
        assert time.monotonic() < deadline, "the dyno outlived its supervisor"
        time.sleep(0.05)


def echo_image(engine: DockerEngine, store: Store, settings: Settings, archive_of: Any) -> str:
    """examples/echo built into an image on ``engine``; its tag."""
    store.create_app("echo", actor="test")
    builder = deployer(store, settings, ImageBuilder(engine, settings))
    build = builder.deploy("echo", archive_of(EXAMPLES / "echo"), actor="test")
    assert build.artifact is not None
    return build.artifact.reference


@pytest.mark.integration
def test_a_container_dyno_serves_on_loopback_and_is_removed_when_stopped(
    engine: DockerEngine, sqlite_store: Store, build_settings: Settings, archive_of: Any
) -> None:
    # On each engine: dockerd, and a podman that may lack an init binary (then none is used).
    image = echo_image(engine, sqlite_store, build_settings, archive_of)
    name = f"kiln-test-{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    dyno = ContainerDyno(
        engine.client, engine.url, image, {"GREETING": "dyno"}, lines.append,
        name=name, labels={"kiln.app": "echo"}, gpu_ids=[],
    )  # fmt: skip
    dyno.start()
    try:
        assert dyno.url.startswith("http://127.0.0.1:"), lines
        wait_healthy(dyno.url)
        assert httpx.get(f"{dyno.url}/").json() == {"hello": "dyno"}
        assert dyno.alive()
    finally:
        dyno.stop(10)
    assert engine.client.containers.list(all=True, filters={"name": name}) == []


@pytest.mark.integration
def test_a_container_dyno_in_kilns_sandbox_has_no_port_its_own_network_and_limits(
    engine: DockerEngine, sqlite_store: Store, build_settings: Settings, archive_of: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    image = echo_image(engine, sqlite_store, build_settings, archive_of)
    name = f"kiln-test-{uuid.uuid4().hex[:8]}"
    network = f"kiln-app-test-{uuid.uuid4().hex[:6]}"
    sockets = Path(tempfile.mkdtemp(prefix="kiln-mount-", dir="/tmp"))
    limits = ContainerLimits(network=network, memory_bytes=256 * 2**20, pids=128,
                             socket_dir=sockets / "dyno")  # fmt: skip
    lines: list[str] = []
    dyno = ContainerDyno(
        engine.client, engine.url, image, {"GREETING": "boxed"}, lines.append,
        name=name, labels={"kiln.app": "echo"}, gpu_ids=[], limits=limits,
    )  # fmt: skip
    dyno.start()
    try:
        assert dyno.socket is not None
        pinned = PinnedSocket(dyno.socket)
        deadline = time.monotonic() + 60
        while pinned.pin() is None:
            assert dyno.alive() and time.monotonic() < deadline, lines
            time.sleep(0.1)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=pinned.connect_path))
        deadline = time.monotonic() + 60
        while True:
            try:
                assert client.get("http://dyno/").json() == {"hello": "boxed"}
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, lines
                time.sleep(0.1)
        attrs = engine.client.containers.get(name).attrs
        bound = (attrs["HostConfig"].get("PortBindings") or {}).values()
        assert not any(bound), bound  # nothing on the host's ports (podman lists EXPOSE, unbound)
        assert list(attrs["NetworkSettings"]["Networks"]) == [network]
        assert attrs["HostConfig"]["Memory"] == 256 * 2**20
        assert attrs["HostConfig"]["PidsLimit"] == 128
    finally:
        dyno.stop(10)
        engine.client.networks.get(network).remove()
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.mark.parametrize(
    ("host", "kind", "visible"),
    [
        (["2"], ArtifactKind.IMAGE, "0"),  # the container has only host GPU 2: it is its 0
        (["1", "3"], ArtifactKind.IMAGE, "0,1"),
        (["2"], ArtifactKind.SLUG, "2"),  # a process sees the host's devices
        (["1", "3"], ArtifactKind.SLUG, "1,3"),
        ([], ArtifactKind.IMAGE, ""),
    ],
)
def test_gpus_are_numbered_as_the_dyno_sees_them(
    host: list[str], kind: ArtifactKind, visible: str
) -> None:
    assert gpu_environment(host, kind) == {
        "CUDA_VISIBLE_DEVICES": visible, "KILN_GPUS": str(len(host)),
    }  # fmt: skip


def test_a_share_of_one_gpu_is_said_and_a_whole_one_is_not() -> None:
    """Where Ray placed the replica (any:0.5 on one GPU), not what the manifest listed first."""
    assert gpu_environment(["0"], ArtifactKind.SLUG, 0.5)["KILN_GPU_SHARE"] == "0.5"
    assert "KILN_GPU_SHARE" not in gpu_environment(["0"], ArtifactKind.SLUG, 1.0)


@pytest.mark.integration
def test_a_container_dyno_that_reserved_a_gpu_and_sees_none_stops_saying_so(
    engine: DockerEngine, sqlite_store: Store, build_settings: Settings, archive_of: Any
) -> None:
    # What a node whose engine cannot hand GPUs over gives the dyno: the GPU numbered, no device.
    image = echo_image(engine, sqlite_store, build_settings, archive_of)
    lines: list[str] = []
    dyno = ContainerDyno(
        engine.client, engine.url, image,
        gpu_environment(["1"], ArtifactKind.IMAGE), lines.append,
        name=f"kiln-test-{uuid.uuid4().hex[:8]}", labels={"kiln.app": "echo"}, gpu_ids=[],
    )  # fmt: skip
    dyno.start()
    try:
        deadline = time.monotonic() + 60
        while dyno.exit_code() is None:
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
        assert dyno.exit_code() != 0
        deadline = time.monotonic() + 10
        while not any("reserved 1 GPU" in line for line in lines):
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
        said = next(line for line in lines if "reserved 1 GPU" in line)
        assert "CUDA_VISIBLE_DEVICES='0'" in said and "sees none" in said
    finally:
        dyno.stop(10)
