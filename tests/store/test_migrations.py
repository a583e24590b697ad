"""Schema migrations: alembic builds exactly the tables the code declares, and upgrades keep data."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from kiln.settings import Settings
from kiln.store import Store
from kiln.store.db import migrate, open_engine
from kiln.store.tables import Base


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
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        )
        assert {"apps", "releases", "tokens"} <= set(inspect(connection).get_table_names())
    store.close()
