"""The metadata store: SQLAlchemy tables, Alembic migrations, compare-and-set state writes."""

from nbflow.store.store import Store, Tx

__all__ = ["Store", "Tx"]
