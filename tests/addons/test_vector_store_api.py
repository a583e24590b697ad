"""Attaching and detaching a vector store through the API: a release with KILN_VECTOR_URL."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kiln.addons.postgres import EmbeddedPostgres
from kiln.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def any_settings(settings: Settings) -> Iterator[Settings]:
    with_pg = settings.model_copy(update={"vector_port": free_port()})
    yield with_pg
    EmbeddedPostgres(with_pg).stop()


def test_attach_injects_the_url_and_detach_removes_it(api: TestClient) -> None:
    api.post("/apps", json={"name": "rag", "public": True})
    created = api.post("/apps/rag/addons", json={"kind": "vector-store"})
    assert created.status_code == 201, created.text
    assert created.json()["config_vars"] == ["KILN_VECTOR_URL"]
    config = api.get("/apps/rag/config").json()
    assert config["KILN_VECTOR_URL"].startswith("postgresql://kiln_rag_vector_store:")
    releases = api.get("/apps/rag/releases").json()
    assert (
        releases[0]["description"] == "Attach vector-store (sets KILN_VECTOR_URL)"
        and "add-on vector-store" in releases[0]["actor"]
    )
    assert api.get("/apps/rag/addons/vector-store").json()["status"].startswith("available")
    named = api.post("/apps/rag/addons", json={"kind": "vector-store", "name": "docs"}).json()
    assert named["config_vars"] == ["DOCS_URL"]
    assert api.delete("/apps/rag/addons/vector-store").json()["status"] == "destroyed"
    assert "KILN_VECTOR_URL" not in api.get("/apps/rag/config").json()
    assert [a["name"] for a in api.get("/apps/rag/addons").json()] == ["docs"]
