"""What every container an app runs shares (dynos, release commands): the app's own network.

Each app's containers sit on a bridge network of their own, so they reach the outside (a model
mirror, an API) but no other app's containers; and with no port published, nothing on the host
reaches them but their supervisor, through a unix socket (``kiln.run.dyno``).
"""

from __future__ import annotations

__all__ = ["app_network", "ensure_network"]

from typing import Any


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
