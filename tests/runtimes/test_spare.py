"""A warm spare of the llm runtime, for real: a process that imported torch and transformers,
claimed by the platform as the next dyno; refused to anyone else; gone when its node is."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln.run.dyno import ProcessDyno
from kiln.run.spares import claim, runs_vllm, start_spare


def llm_env(model: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "KILN_RUNTIME": "llm",
            "KILN_MODEL": str(model), "KILN_LLM_ENGINE": "transformers", "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", **extra}  # fmt: skip


def wait_for(check: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def claimed_dyno(spare: Path, cwd: Path, model: Path, lines: list[str]) -> ProcessDyno:
    """The llm runtime's dyno in ``cwd``, started as a supervisor starts it: from the spare."""
    dyno = ProcessDyno([sys.executable, "-m", "kiln_runtime"], cwd, llm_env(model), lines.append,
                       spare=spare)  # fmt: skip
    dyno.start()
    assert dyno.claimed is not None, "the dyno should have been the spare"
    return dyno


@pytest.fixture
def node() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for the node's raylet: the spare leaves when it does."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def spare(tmp_path: Path, tiny_model: Path, node: subprocess.Popen[bytes]) -> Iterator[Path]:
    # Outside pytest's private temp dir, so that a test can let another uid reach it.
    where = Path(tempfile.mkdtemp(prefix="kiln-spare-"))
    path = where / "spare.sock"
    # As a supervisor leaves one (setsid -f: nobody's child); it leaves with the stand-in node.
    assert start_spare([sys.executable, "-m", "kiln_runtime"], tmp_path, llm_env(tiny_model),
                       None, path, watch=node.pid)  # fmt: skip
    wait_for(path.exists, "the spare to listen")
    yield path
    shutil.rmtree(where, ignore_errors=True)


def test_a_claimed_spare_serves_as_the_dyno_with_its_imports_already_done(
    spare: Path, tmp_path: Path, tiny_model: Path
) -> None:
    lines: list[str] = []
    started = time.monotonic()
    dyno = claimed_dyno(spare, tmp_path, tiny_model, lines)
    assert not spare.exists()  # claimed: nobody else connects to it
    try:
        url = dyno.url
        wait_for(lambda: _healthy(url), "the claimed dyno to load its model")
        took = time.monotonic() - started
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 3})
        assert reply.status_code == 200 and reply.json()["object"] == "text_completion"
        [ready] = [line for line in lines if " ready " in line]
        # Its clock starts at the claim; torch and transformers were imported before it.
        imported = float(ready.split(" import ")[1].split("s", 1)[0])
        assert imported < 0.2, ready
        assert took < 30
    finally:
        dyno.stop(10)
    # What the spare's parent saw: uvicorn stops gracefully, then re-raises the SIGTERM.
    assert not dyno.alive() and dyno.exit_code() == -signal.SIGTERM


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_spare_leaves_with_its_node(spare: Path, node: subprocess.Popen[bytes]) -> None:
    node.kill()
    node.wait()
    wait_for(lambda: not spare.exists(), "the spare to leave", timeout_s=10)
    assert claim(spare, {}, Path("/")) is None


STRANGER = """
import json, os, socket, sys
connection = socket.socket(socket.AF_UNIX)
connection.connect(sys.argv[1])
out, life = os.pipe(), os.pipe()
body = json.dumps({"env": {"PATH": "/usr/bin"}, "cwd": "/"}).encode()
try:
    socket.send_fds(connection, [body], [out[1], life[0]])
    connection.shutdown(socket.SHUT_WR)
    print(repr(connection.recv(100)))
except (BrokenPipeError, ConnectionResetError):  # closed before or after it was sent: refused
    print("refused")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="another uid needs root")
def test_only_the_platforms_uid_may_claim_a_spare(spare: Path) -> None:
    # The app's own code runs as the app's uid (which can reach its sandbox's sockets), not the
    # platform's: it may not take the spare.
    spare.parent.chmod(0o755)
    spare.chmod(0o777)
    stranger = subprocess.run(
        ["/usr/bin/python3", "-c", STRANGER, str(spare)], user=65534, group=65534,
        extra_groups=[], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert stranger.returncode == 0, stranger.stderr
    assert stranger.stdout.strip() in ("b''", "refused")  # closed, no pid: not claimed
    assert spare.exists()  # still there for the platform


def _spares_at(path: Path) -> list[int]:
    """The pids of processes whose command line names ``path`` (this test's own spare)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(path).encode() in (proc / "cmdline").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_spare_whose_socket_is_removed_leaves(spare: Path) -> None:
    # The app destroyed, or a newer release's spare in its place: nobody can claim this one.
    assert _spares_at(spare)
    spare.unlink()
    wait_for(lambda: not _spares_at(spare), "the spare to leave", timeout_s=10)


IMPOSTOR = """
import socket, sys
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(1)
print("ready", flush=True)
connection, _ = listener.accept()
socket.recv_fds(connection, 4096, 2)
connection.sendall(sys.argv[2].encode() + b"\\n")  # a pid that is not its own child
connection.recv(1)
"""


def test_a_fake_spare_cannot_make_the_platform_signal_another_process(tmp_path: Path) -> None:
    # An app's uid can write where its spares listen. What answers there names a pid; the
    # platform must not adopt (and later stop) a process that is not that spare's own child.
    bystander = subprocess.Popen(["sleep", "60"])
    path = tmp_path / "spare.sock"
    impostor = subprocess.Popen(
        [sys.executable, "-c", IMPOSTOR, str(path), str(bystander.pid)], stdout=subprocess.PIPE
    )
    try:
        assert impostor.stdout is not None and impostor.stdout.readline() == b"ready\n"
        assert claim(path, {"PATH": "/usr/bin"}, tmp_path) is None
        assert bystander.poll() is None
    finally:
        impostor.kill()
        bystander.kill()
        impostor.wait()
        bystander.wait()


def test_a_claimed_dyno_that_crashes_tells_its_exit_code_and_restarts_in_place(
    spare: Path, tmp_path: Path, tiny_model: Path
) -> None:
    dyno = claimed_dyno(spare, tmp_path, tiny_model, [])
    assert dyno.claimed is not None
    held = {fd: _names(fd) for fd in (dyno.claimed._lifeline, dyno.claimed._pidfd)}
    try:
        os.kill(dyno.claimed.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        wait_for(lambda: not dyno.alive(), "the crash to be seen")
        assert dyno.exit_code() == -signal.SIGKILL
        dyno.start()  # the keeper restarts it in place: no spare left, so a process
        assert dyno.claimed is None and dyno.alive()
        wait_for(lambda: _healthy(dyno.url), "the restarted dyno")
        # The spare's lifeline and pidfd went with it (their numbers may name new files now).
        assert all(_names(fd) != was for fd, was in held.items())
    finally:
        dyno.stop(10)


def _names(fd: int) -> str | None:
    """What this process's descriptor ``fd`` refers to (``pipe:[N]``, a pidfd ...), if open."""
    try:
        return str(Path(f"/proc/self/fd/{fd}").readlink())
    except OSError:
        return None


def test_the_platform_never_claims_through_a_link_or_from_another_uid(tmp_path: Path) -> None:
    # The app's uid can write where its spares listen: a link there to a socket of the
    # platform's (HAProxy's admin socket, the engine's ...) must get neither a connection nor
    # the dyno's environment; nor may a socket that is not the app's own.
    import socket as sockets

    victim = sockets.socket(sockets.AF_UNIX)
    victim.bind(str(tmp_path / "victim.sock"))
    victim.listen(1)
    victim.settimeout(0.5)
    (tmp_path / "spare-link.sock").symlink_to(tmp_path / "victim.sock")
    secret = {"DATABASE_URL": "postgres://app:secret@db/app"}
    try:
        assert claim(tmp_path / "spare-link.sock", secret, tmp_path, uid=65534) is None
        assert claim(tmp_path / "victim.sock", secret, tmp_path, uid=65534) is None  # root's
        with pytest.raises(TimeoutError):
            victim.accept()  # nobody connected
    finally:
        victim.close()


def test_a_claimed_dyno_that_cannot_start_says_why_in_its_output(
    spare: Path, tmp_path: Path, tiny_model: Path
) -> None:
    lines: list[str] = []
    dyno = claimed_dyno(spare, tmp_path / "gone", tiny_model, lines)
    wait_for(lambda: not dyno.alive(), "the dyno to fail")
    assert dyno.exit_code() == 1
    wait_for(lambda: any("FileNotFoundError" in line for line in lines), "its reason")
    dyno.stop(1)


def test_no_spare_is_left_for_a_dyno_that_runs_vllm(tmp_path: Path) -> None:
    # With [llm] engine = "auto", the dyno's own environment decides: vLLM there, and a spare
    # would leave at once (vLLM's engine is a process of its own).
    fake = tmp_path / "site" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    command = [sys.executable, "-m", "kiln_runtime"]
    llm = {"PATH": os.environ["PATH"], "KILN_RUNTIME": "llm"}
    with_vllm = {**llm, "PYTHONPATH": str(tmp_path / "site")}
    assert runs_vllm(command, tmp_path, with_vllm, None)
    assert not runs_vllm(command, tmp_path, llm, None)
    assert not runs_vllm(command, tmp_path, {**with_vllm, "KILN_LLM_ENGINE": "transformers"}, None)
    assert not runs_vllm(command, tmp_path, {**with_vllm, "KILN_RUNTIME": "embeddings"}, None)
    assert runs_vllm(command, tmp_path, {**llm, "KILN_LLM_ENGINE": "vllm"}, None)
