from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.run.platform import Platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory, uv_cache: Path) -> Iterator[Platform]:
    """A running Kiln with its own Ray, for the whole session (it takes a while to start)."""
    kiln = Platform(tmp_path_factory.mktemp("platform") / "home", uv_cache)
    kiln.up()
    yield kiln
    kiln.down()
