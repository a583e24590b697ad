"""Per-app sandboxes, from the side of an app's code trying to get out: the platform's secrets,
another app's files and dyno, the container engine, the supervisor's environment."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from kiln.builds.slug import slug_python
from kiln.run.dyno import ProcessDyno
from kiln.run.sockets import PinnedSocket
from kiln.sandbox import Sandbox, isolation, sandbox_for
from kiln.settings import Settings
from kiln.vault import load_vault

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-app uids need root")

PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    result = {}
    for path in sys.argv[1:]:
        try:
            if os.path.isdir(path):
                result[path] = "listed %d" % len(os.listdir(path))
            elif path.endswith(".sock"):
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                result[path] = "connected"
            else:
                result[path] = "read %d" % len(open(path, "rb").read())
        except PermissionError:
            result[path] = "denied"
        except OSError as exc:
            result[path] = type(exc).__name__
    print(json.dumps(result))
    """
)


def probe(settings: Settings, box: Sandbox, *paths: Path) -> dict[str, str]:
    """What ``box``'s uid gets trying each path: a read, a listing or a connection."""
    done = subprocess.run(
        [slug_python(settings), "-I", "-c", PROBE, *map(str, paths)],
        capture_output=True, text=True, check=True, env=box.environment(), cwd=box.home,
        **box.process_options(),
    )  # fmt: skip
    return {Path(k).name: v for k, v in json.loads(done.stdout).items()}


@pytest.fixture
def boxes(settings: Settings) -> tuple[Sandbox, Sandbox]:
    return sandbox_for(settings, "alice", 901).ensure(), sandbox_for(
        settings, "mallory", 902
    ).ensure()


def test_an_apps_code_cannot_read_the_platforms_secrets(
    settings: Settings, boxes: tuple[Sandbox, Sandbox]
) -> None:
    load_vault(settings)  # writes secret.key
    (settings.home / "kiln.db").write_bytes(b"SQLite")
    _alice, mallory = boxes
    seen = probe(settings, mallory, settings.home, settings.home / "secret.key",
                 settings.home / "kiln.db")  # fmt: skip
    assert seen == {"kiln-home": "denied", "secret.key": "denied", "kiln.db": "denied"}


def test_an_app_cannot_reach_another_apps_files(
    settings: Settings, boxes: tuple[Sandbox, Sandbox]
) -> None:
    alice, mallory = boxes
    secret = alice.home / "notes.txt"
    subprocess.run(["sh", "-c", f"echo private > {secret}"], check=True, **alice.process_options())
    assert probe(settings, alice, secret) == {"notes.txt": "read 8"}
    assert probe(settings, mallory, alice.root, secret, alice.slugs) == {
        "alice.901": "denied", "notes.txt": "denied", "slugs": "denied",
    }  # fmt: skip


def test_a_slug_is_read_only_to_its_own_app(
    settings: Settings, boxes: tuple[Sandbox, Sandbox]
) -> None:
    alice, _ = boxes
    slug = alice.slugs / "abc"
    (slug / "app").mkdir(parents=True)
    (slug / "app" / "main.py").write_text("app = 1\n")
    alice.share(slug)
    assert probe(settings, alice, slug / "app" / "main.py") == {"main.py": "read 8"}
    wrote = subprocess.run(["sh", "-c", f"echo x >> {slug}/app/main.py"], capture_output=True,
                           **alice.process_options())  # fmt: skip
    assert wrote.returncode != 0 and (slug / "app" / "main.py").read_text() == "app = 1\n"


def test_the_container_engine_and_the_supervisors_environment_are_closed(
    settings: Settings, boxes: tuple[Sandbox, Sandbox], tmp_path: Path
) -> None:
    _, mallory = boxes
    engine = tmp_path / "engine.sock"  # a socket made as a daemon makes it: root's, 0660
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(engine))
    engine.chmod(0o660)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                              env={"KILN_SECRET_KEY": "s3cret"})  # fmt: skip
    try:
        environ = Path(f"/proc/{holder.pid}/environ")
        assert probe(settings, mallory, engine, environ) == {
            "engine.sock": "denied", "environ": "denied",
        }  # fmt: skip
    finally:
        holder.kill()
        listener.close()


SERVER = textwrap.dedent(
    """
    import os, socketserver, http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"alice")
        def log_message(self, *a): pass
    class S(socketserver.UnixStreamServer):
        def get_request(self):
            request, _ = super().get_request()
            return request, ("dyno", 0)
    S(os.environ["KILN_SOCKET"], H).serve_forever()
    """
)


def test_a_dyno_is_reached_by_its_supervisor_only(
    settings: Settings, boxes: tuple[Sandbox, Sandbox]
) -> None:
    alice, mallory = boxes
    server = alice.home / "server.py"
    server.write_text(SERVER)
    os.chown(server, alice.uid or 0, alice.uid or 0)
    sock = alice.sockets / "dyno.abc.sock"
    dyno = ProcessDyno([slug_python(settings), str(server)], alice.home, alice.environment(),
                       lambda _line: None, sandbox=alice, socket=sock)  # fmt: skip
    dyno.start()
    try:
        pinned = PinnedSocket(sock)
        deadline = time.monotonic() + 10
        while pinned.pin() is None:
            assert time.monotonic() < deadline, "the dyno never made its socket"
            time.sleep(0.05)
        transport = httpx.HTTPTransport(uds=pinned.connect_path)
        assert httpx.Client(transport=transport).get("http://dyno/").text == "alice"
        assert probe(settings, mallory, sock) == {"dyno.abc.sock": "denied"}
        assert probe(settings, alice, sock) == {"dyno.abc.sock": "connected"}
    finally:
        dyno.stop(5)


def test_a_link_planted_in_place_of_the_socket_leads_nowhere(tmp_path: Path) -> None:
    """The app owns the directory its dyno's socket is in: it could swap the socket for a link
    to another app's, and have its supervisor carry its traffic there."""
    neighbour = tmp_path / "neighbour.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(neighbour))
    planted = tmp_path / "dyno.sock"
    planted.symlink_to(neighbour)
    assert PinnedSocket(planted).pin() is None
    (tmp_path / "file.sock").write_text("not a socket")
    assert PinnedSocket(tmp_path / "file.sock").pin() is None
    assert PinnedSocket(neighbour).pin() is not None
    listener.close()


def test_isolation_is_reported(settings: Settings) -> None:
    report = isolation(settings)
    assert report.per_app_uids and report.summary.startswith("per-app uids")


def test_sandboxes_under_folders_that_did_not_exist_are_reachable(tmp_path: Path) -> None:
    # KILN_SANDBOX_DIR=/srv/kiln/sandboxes on a machine without /srv/kiln, with a umask of 077:
    # the folders made on the way must let each app's uid pass (not list), or no dyno starts.
    where = Path(tempfile.mkdtemp(prefix="kiln-srv-"))  # outside pytest's private temp dir
    try:
        where.chmod(0o711)  # as /srv is
        settings = Settings(home=tmp_path / "home", sandbox_dir=where / "kiln" / "sandboxes")
        old = os.umask(0o077)
        try:
            box = sandbox_for(settings, "alice", 903).ensure()
        finally:
            os.umask(old)
        assert probe(settings, box, box.home)["home"].startswith("listed")
        assert probe(settings, box, where / "kiln")["kiln"] == "denied"  # passed, not listed
    finally:
        shutil.rmtree(where, ignore_errors=True)
