"""Journey: the RAG example, with its vector store and embeddings model, end to end."""

from collections.abc import Callable

import httpx
import pytest

from tests.support.apps import EXAMPLES
from tests.support.platform import Platform, deploy

pytestmark = pytest.mark.integration


def test_the_rag_example_end_to_end(
    platform: Platform, fresh_app: Callable[[Platform, str], str]
) -> None:
    """examples/rag: its kiln.toml attaches api-keys and a vector store at the first deploy; a
    real embeddings model fills the store and answers with the nearest passages."""
    import json

    app = fresh_app(platform, "rag")  # --public: api-keys comes from kiln.toml at the deploy
    output = deploy(platform, EXAMPLES / "rag", app, "--artifact", "slug")
    assert "Attached the vector-store add-on (kiln.toml): sets KILN_VECTOR_URL" in output
    assert "Attached the api-keys add-on (kiln.toml)" in output
    addons = json.loads(platform.kiln("addons", "-a", app, "--json").output)
    assert sorted(a["kind"] for a in addons) == ["api-keys", "vector-store"]
    key = json.loads(platform.kiln("keys:create", "-a", app, "--json").output)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    url = platform.app_url(app)
    platform.wait(
        "the key",
        lambda: httpx.get(f"{url}/healthz", headers=auth).status_code == 200,
        timeout_s=10,
    )
    documents = [
        {
            "text": "The Eiffel Tower is in Paris, the capital of France.",
            "metadata": {"topic": "travel"},
        },
        {
            "text": "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
            "metadata": {"topic": "biology"},
        },
        {
            "text": "A GPU runs thousands of threads in parallel for matrix arithmetic.",
            "metadata": {"topic": "computing"},
        },
    ]
    stored = httpx.post(f"{url}/documents", json={"documents": documents}, headers=auth, timeout=60)
    assert stored.status_code == 200 and stored.json()["stored"] == 3
    answer = httpx.post(
        f"{url}/ask",
        json={"question": "How do plants make food from light?", "k": 2},
        headers=auth,
        timeout=60,
    ).json()
    assert answer["passages"][0]["text"].startswith("Photosynthesis")
    filtered = httpx.post(
        f"{url}/ask",
        json={"question": "Paris", "k": 3, "filter": {"topic": "computing"}},
        headers=auth,
        timeout=60,
    ).json()
    assert [p["text"][:5] for p in filtered["passages"]] == ["A GPU"]
    assert "KILN_VECTOR_URL" in platform.kiln("config", "-a", app, "--json").output
    destroyed = platform.kiln("addons:destroy", "vector-store", "-a", app, "--confirm", app).output
    assert "Destroyed vector-store" in destroyed
    assert "KILN_VECTOR_URL" not in platform.kiln("config", "-a", app, "--json").output
