from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kiln.api import create_app
from kiln.settings import Settings
from kiln.store import Store


@pytest.fixture
def api(store: Store, any_settings: Settings) -> Iterator[TestClient]:
    """The API over each store, authenticated with a fresh platform token."""
    token = store.create_token("tester").token
    with TestClient(create_app(any_settings, store)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
