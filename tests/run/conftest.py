from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.run.platform import Platform
from tests.support.fake_hub import FakeHub


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
