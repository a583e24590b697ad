"""The container engine, through the Docker Engine API (dockerd, or podman's compatible socket):
image builds, one-off runs (release commands), and each app's own network.

All of Kiln's calls to an engine go through ``DockerEngine``; tests that need no engine use a
fake with the same methods (``ContainerEngine``).

Each app's containers sit on a bridge network of their own (``app_network``), so they reach the
outside (a model mirror, an API) but no other app's containers; with no port published, nothing
on the host reaches a dyno but its supervisor, through a unix socket (``kiln.run.dyno``).
"""

from __future__ import annotations

__all__ = [
    "ContainerEngine",
    "DockerEngine",
    "EngineError",
    "app_network",
    "connect_engine",
    "ensure_network",
]

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import requests.exceptions

from kiln.errors import Unavailable

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The classic builder's bookkeeping lines say nothing a user needs.
_NOISE = re.compile(r"^\s*(---> Running in |Removing intermediate container |---> [0-9a-f]{12}$)")


def _kill_quietly(container: Any, fired: threading.Event) -> None:
    with contextlib.suppress(Exception):  # it ended meanwhile
        container.kill()
        fired.set()


class EngineError(Unavailable):
    default_code = "engine_error"


class ContainerEngine(Protocol):
    name: str

    def has_image(self, reference: str) -> bool: ...
    def pull(self, reference: str) -> None: ...
    def build(
        self, context: Path, tag: str, buildargs: dict[str, str], on_line: Callable[[str], None]
    ) -> str: ...
    def import_rootfs(self, tarball: Path, repository: str, tag: str) -> str: ...
    def run(
        self, image: str, command: str, env: dict[str, str], on_line: Callable[[str], None],
        timeout_s: float, options: dict[str, Any] | None = None,
    ) -> int | None: ...  # fmt: skip
    def ensure_network(self, name: str) -> str: ...
    def images_of(self, repository: str) -> list[tuple[str, float, int]]: ...
    def remove_image(self, tag: str) -> None: ...
    def push(
        self, tag: str, remote: str, auth: dict[str, str] | None, on_line: Callable[[str], None]
    ) -> None: ...
    def fetch(
        self, remote: str, tag: str, auth: dict[str, str] | None, on_line: Callable[[str], None]
    ) -> None: ...


class DockerEngine:
    """A Docker Engine API endpoint; ``name`` says which engine answered (docker or podman)."""

    def __init__(self, client: docker.DockerClient, url: str) -> None:
        self.client = client
        self.url = url
        version = client.version()
        components = " ".join(c.get("Name", "") for c in version.get("Components", []))
        self.name = "podman" if "podman" in components.lower() else "docker"
        self.version = str(version.get("Version", "?"))

    def has_image(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:  # podman answers some unknown names with a 500
            if exc.status_code in (404, 500):
                return False
            raise
        return True

    def pull(self, reference: str) -> None:
        try:
            self.client.images.pull(reference)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise EngineError(f"could not pull {reference}: {_reason(exc)}") from None

    def build(
        self, context: Path, tag: str, buildargs: dict[str, str], on_line: Callable[[str], None]
    ) -> str:
        """Build ``context`` (with its Dockerfile) as ``tag``; each output line goes to ``on_line``.

        Returns the image id. A failing step raises ``EngineError`` with the engine's message.
        """
        image_id = ""
        try:
            stream = self.client.api.build(
                path=str(context), tag=tag, rm=True, forcerm=True, pull=False, decode=True,
                buildargs=buildargs or None,
            )  # fmt: skip
            for chunk in _chunks(stream):
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise EngineError(str(detail).strip(), code="image_build_failed")
                for line in _ANSI.sub("", str(chunk.get("stream", ""))).splitlines():
                    if line.strip() and not _NOISE.match(line):
                        on_line(line.rstrip())
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = str(aux["ID"])
        except docker.errors.APIError as exc:
            raise EngineError(_reason(exc), code="image_build_failed") from None
        except requests.exceptions.RequestException as exc:
            raise EngineError(f"lost the engine at {self.url}: {exc}") from None
        return image_id or str(self.client.images.get(tag).id)

    def run(
        self, image: str, command: str, env: dict[str, str], on_line: Callable[[str], None],
        timeout_s: float, options: dict[str, Any] | None = None,
    ) -> int | None:  # fmt: skip
        """Run COMMAND (a shell line) once in a fresh container of IMAGE with ENV, each output line
        to ON_LINE; its exit code, None if it was killed at TIMEOUT_S. The container is removed.
        ``options`` go to the engine's container create (network, limits)."""
        try:
            container = self.client.containers.run(
                image, [command], entrypoint=["/bin/sh", "-c"], environment=env, detach=True,
                **(options or {}),
            )  # fmt: skip
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise EngineError(f"could not run {image}: {_reason(exc)}") from None
        fired = threading.Event()
        killer = threading.Timer(timeout_s, _kill_quietly, (container, fired))
        killer.start()
        try:
            pending = b""
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace").rstrip())
            if pending:
                on_line(pending.decode(errors="replace").rstrip())
            code = int(container.wait()["StatusCode"])
            return None if fired.is_set() else code
        finally:
            killer.cancel()
            with contextlib.suppress(Exception):  # already gone
                container.remove(force=True)

    def ensure_network(self, name: str) -> str:
        return ensure_network(self.client, name)

    def images_of(self, repository: str) -> list[tuple[str, float, int]]:
        """Each name of ``repository``'s images (its local tags, and the names they were pushed
        to a registry under), with when the image was made (Unix time) and its size."""
        found = []
        for image in self.client.images.list():
            created = _unix_time(str(image.attrs.get("Created", "")))
            size = int(image.attrs.get("Size") or 0)
            found += [(_short(tag), created, size) for tag in image.tags
                      if local_name(tag).startswith(f"{repository}:")]  # fmt: skip
        return found

    def remove_image(self, tag: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.images.remove(tag)

    def push(
        self, tag: str, remote: str, auth: dict[str, str] | None, on_line: Callable[[str], None]
    ) -> None:
        """Push the local image ``tag`` to a registry as ``remote`` (which names it here too:
        removing one name of two removes the image on podman; garbage collection takes both)."""
        repository, version = _split(remote)
        self.client.api.tag(tag, repository, version)
        try:
            stream = self.client.api.push(
                repository, tag=version, auth_config=auth, stream=True, decode=True
            )
            _follow(stream, f"could not push {remote}", on_line)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise EngineError(f"could not push {remote}: {_reason(exc)}") from None

    def fetch(
        self, remote: str, tag: str, auth: dict[str, str] | None, on_line: Callable[[str], None]
    ) -> None:
        """Pull ``remote`` from its registry and name it ``tag`` here, as the head does."""
        repository, version = _split(remote)
        try:
            stream = self.client.api.pull(
                repository, tag=version, auth_config=auth, stream=True, decode=True
            )
            _follow(stream, f"could not pull {remote}", on_line)
            local, local_version = _split(tag)
            self.client.api.tag(remote, local, local_version)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise EngineError(f"could not pull {remote}: {_reason(exc)}") from None

    def import_rootfs(self, tarball: Path, repository: str, tag: str) -> str:
        """Import a root filesystem tarball as ``repository:tag`` (``docker import``).

        A file, not a stream: podman's API refuses the chunked upload a stream would need.
        """
        try:
            result = self.client.api.import_image_from_file(
                str(tarball), repository=repository, tag=tag
            )
        except docker.errors.APIError as exc:
            raise EngineError(f"could not import {repository}:{tag}: {_reason(exc)}") from None
        text = str(result).strip()
        try:  # dockerd answers {"status": "sha256:..."}; podman the bare id
            image_id = str(json.loads(text.splitlines()[-1]).get("status", text))
        except (json.JSONDecodeError, AttributeError, IndexError):
            image_id = text
        self.client.api.tag(image_id, repository, tag)  # podman ignores the tag given to import
        return image_id


def _chunks(stream: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Build output as dicts; podman sometimes packs several JSON lines in one chunk."""
    for item in stream:
        if isinstance(item, dict):
            yield item
            continue
        for line in str(item).splitlines():
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    yield {"stream": line}


def _split(reference: str) -> tuple[str, str]:
    """``host:5000/kiln/echo:b3`` -> (``host:5000/kiln/echo``, ``b3``)."""
    repository, _, version = reference.rpartition(":")
    if not repository or "/" in version:
        return reference, "latest"
    return repository, version


def _follow(stream: Iterable[Any], failure: str, on_line: Callable[[str], None]) -> None:
    """A push or pull's progress: each layer's outcome and the digest; its error raised."""
    for chunk in _chunks(stream):
        if chunk.get("error"):
            raise EngineError(f"{failure}: {chunk.get('error')}")
        status = str(chunk.get("status") or "")
        if status in ("Pushed", "Layer already exists", "Pull complete", "Already exists") or (
            status.startswith(("Digest:", "Status:")) or "digest:" in status
        ):
            layer = chunk.get("id")
            on_line(f"{layer}: {status}" if layer else status)


def _unix_time(stamp: str) -> float:
    """An engine's "Created": RFC 3339 text (dockerd, podman), or Unix seconds."""
    if stamp.isdigit():
        return float(stamp)
    try:
        trimmed = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
        return datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return 0.0


def _reason(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()


def connect_engine(url: str | None, timeout_s: float = 5.0) -> DockerEngine | None:
    """The engine at ``url`` (or DOCKER_HOST, or the default socket), or None if none answers."""
    try:
        if url:
            client = docker.DockerClient(base_url=url, timeout=600)
        else:
            client = docker.from_env(timeout=600)
        client.api.timeout = timeout_s
        client.ping()
        client.api.timeout = 600
        return DockerEngine(client, url or client.api.base_url)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return None


def app_network(app: str) -> str:
    return f"kiln-app-{app}"


def ensure_network(client: Any, name: str) -> str:
    """Make the bridge network ``name`` unless it exists (``client``: a ``docker.DockerClient``,
    against dockerd or podman); returns its name."""
    import docker.errors

    try:
        client.networks.get(name)
        return name
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:  # podman answers some unknown names with a 500
        if exc.status_code != 500:
            raise
    try:
        client.networks.create(name, driver="bridge", labels={"kiln.network": "app"})
    except docker.errors.APIError as exc:  # another replica made it meanwhile
        if exc.status_code != 409 and "already exists" not in str(exc).lower():
            raise
    return name


def local_name(tag: str) -> str:
    """``kiln/echo:b1`` for that tag under any name: short, podman's, or a registry's
    (``10.0.0.5:5000/kiln/echo:b1``)."""
    short = _short(tag)
    first, _, rest = short.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return rest
    return short


def _short(tag: str) -> str:
    """A tag as Kiln wrote it: podman names a local ``kiln/echo:b1`` ``docker.io/kiln/echo:b1``
    (or ``localhost/...``), and answers to the short name as well."""
    for registry in ("docker.io/library/", "docker.io/", "localhost/"):
        if tag.startswith(registry):
            return tag.removeprefix(registry)
    return tag
