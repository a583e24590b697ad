"""``python -m kiln.run.reaper ENGINE CONTAINER``: remove CONTAINER once stdin closes.

A dyno supervisor holds the write end of this process's stdin. When the supervisor dies, even by
SIGKILL, the kernel closes the pipe, the read below returns, and the container goes too.
"""

import contextlib
import sys

import docker


def main() -> None:
    engine_url, container_id = sys.argv[1], sys.argv[2]
    while sys.stdin.buffer.read(4096):
        pass
    with contextlib.suppress(docker.errors.NotFound):
        docker.DockerClient(base_url=engine_url).containers.get(container_id).remove(force=True)


if __name__ == "__main__":
    main()
