"""The vector-store add-on on a real PostgreSQL with pgvector (the embedded one Kiln runs)."""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from kiln.addons.postgres import EmbeddedPostgres
from kiln.addons.vector_store import VectorStoreProvider, config_var_for
from kiln.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vector_settings(
    tmp_path_factory: pytest.TempPathFactory, sandbox_root: Path
) -> Iterator[Settings]:
    settings = Settings(home=tmp_path_factory.mktemp("vectors"), vector_port=free_port(),
                        pg_dir=Path(f"{sandbox_root}-pg/vectors"))  # fmt: skip
    postgres = EmbeddedPostgres(settings)
    postgres.ensure()
    yield settings
    postgres.stop()


def test_each_app_gets_its_own_database_role_and_url(vector_settings: Settings) -> None:
    provider = VectorStoreProvider(vector_settings)
    made = provider.provision("alpha", "vector-store")
    url = made.config_vars["KILN_VECTOR_URL"]
    assert url.startswith("postgresql://kiln_alpha_vector_store:") and url.endswith(
        "/kiln_alpha_vector_store"
    )
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT extname FROM pg_extension WHERE extname = 'vector'"
        ).fetchone() == ("vector",)
        conn.execute("CREATE TABLE notes (v vector(3))")
        conn.execute("INSERT INTO notes VALUES ('[1,2,3]')")
    assert provider.status(made.state).startswith("available")
    provider.deprovision("alpha", made.state)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5)


def test_one_apps_role_cannot_read_another_apps_database(vector_settings: Settings) -> None:
    provider = VectorStoreProvider(vector_settings)
    a = provider.provision("app-a", "vector-store")
    b = provider.provision("app-b", "vector-store")
    url_a, url_b = a.config_vars["KILN_VECTOR_URL"], b.config_vars["KILN_VECTOR_URL"]
    with psycopg.connect(url_a, autocommit=True) as conn:
        conn.execute("CREATE TABLE secrets (s text)")
        conn.execute("INSERT INTO secrets VALUES ('only for a')")
    b_into_a = url_b.rsplit("/", 1)[0] + "/" + url_a.rsplit("/", 1)[1]
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(b_into_a, connect_timeout=5)
    wrong_password = url_a.replace(url_a.split(":")[2].split("@")[0], "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong_password, connect_timeout=5)
    provider.deprovision("app-a", a.state)
    provider.deprovision("app-b", b.state)


def test_a_failed_provisioning_leaves_nothing_behind(vector_settings: Settings) -> None:
    provider = VectorStoreProvider(vector_settings)
    first = provider.provision("twice", "vector-store")
    with pytest.raises(psycopg.errors.DuplicateObject):
        provider.provision("twice", "vector-store")  # the role exists: nothing of the second stays
    with psycopg.connect(first.config_vars["KILN_VECTOR_URL"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # and the first one still works
    provider.deprovision("twice", first.state)


def test_named_stores_get_their_own_variable() -> None:
    assert config_var_for("vector-store") == "KILN_VECTOR_URL"
    assert config_var_for("docs") == "DOCS_URL"


def test_the_in_dyno_client_upserts_queries_and_deletes(vector_settings: Settings) -> None:
    from kiln_runtime.vectors import VectorStore

    provider = VectorStoreProvider(vector_settings)
    made = provider.provision("client", "vector-store")
    store = VectorStore(made.config_vars["KILN_VECTOR_URL"], dimensions=3, table="items")
    assert (
        store.upsert(
            ["x", "y", "z"],
            [[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0]],
            [{"k": "a"}, {"k": "b"}, {"k": "b"}],
        )
        == 3
    )
    nearest = store.query([1, 0, 0], k=2)
    assert [m.id for m in nearest] == ["x", "z"] and nearest[0].score == pytest.approx(1.0)
    assert [m.id for m in store.query([1, 0, 0], k=5, filter={"k": "b"})] == ["z", "y"]
    assert store.delete(["x"]) == 1 and [m.id for m in store.query([1, 0, 0], k=1)] == ["z"]
    with psycopg.connect(made.config_vars["KILN_VECTOR_URL"]) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'items'"
        ).fetchall()
    assert any("hnsw" in row[0] for row in indexes)
    store.close()
    provider.deprovision("client", made.state)


def test_the_superuser_password_file_is_private(vector_settings: Settings) -> None:
    assert (vector_settings.resolved_pg_dir / "superuser.password").stat().st_mode & 0o777 == 0o600
