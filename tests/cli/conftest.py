from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from kiln.cli.main import cli

Kiln = Callable[..., Result]


@pytest.fixture
def kiln(live_api, monkeypatch: pytest.MonkeyPatch) -> Kiln:  # type: ignore[no-untyped-def]
    """Run ``kiln ARGS`` against the live control plane, as a user's shell would."""
    monkeypatch.setenv("KILN_API_URL", live_api.url)
    monkeypatch.setenv("KILN_TOKEN", live_api.token)

    def run(*args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    return run
