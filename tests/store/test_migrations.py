"""Schema migrations: alembic builds exactly the tables the code declares, and upgrades keep data."""

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from kiln.settings import Settings
from kiln.store import Store, load_vault
from kiln.store.db import MIGRATIONS, migrate, open_engine
from kiln.store.tables import Base, utcnow


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_migrations_match_the_declared_tables(any_settings: Settings) -> None:
    engine = open_engine(any_settings.resolved_database_url)
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    engine.dispose()


def test_migrating_twice_is_harmless_and_keeps_data(any_settings: Settings) -> None:
    store = Store.open(any_settings)
    store.create_app("keep", actor="a")
    migrate(store.engine)
    assert [a.name for a in store.list_apps()] == ["keep"]
    with store.engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
        )
        assert {"apps", "releases", "tokens", "builds"} <= set(
            inspect(connection).get_table_names()
        )
    store.close()


def test_upgrading_from_the_first_schema_keeps_apps_and_config(any_settings: Settings) -> None:
    engine = open_engine(any_settings.resolved_database_url)
    migrate(engine, "0001")
    vault = load_vault(any_settings)
    with engine.begin() as connection:  # what a control plane on schema 0001 wrote
        connection.execute(
            text("INSERT INTO apps (id, name, created_at) VALUES (1, 'old', :t)"), {"t": utcnow()}
        )
        connection.execute(
            text(
                "INSERT INTO releases (app_id, version, description, config_sealed, status, actor,"
                " created_at) VALUES (1, 1, 'Initial release', :c, 'succeeded', 'a', :t)"
            ),
            {"c": vault.seal({"KEEP": "me"}), "t": utcnow()},
        )
    migrate(engine)
    store = Store(engine, vault)
    assert store.get_config("old") == {"KEEP": "me"}
    assert store.list_releases("old")[0].artifact is None
    assert store.builds.list("old") == []
    engine.dispose()
