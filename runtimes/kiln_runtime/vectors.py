"""A small client for the vector-store add-on, inside a dyno: upsert, query, delete.

    from kiln_runtime.vectors import VectorStore
    store = VectorStore(dimensions=384)                 # reads KILN_VECTOR_URL
    store.upsert(["a", "b"], [vec_a, vec_b], [{"src": "x"}, {"src": "y"}])
    store.query(vec, k=3, filter={"src": "x"})          # -> [Match(id, score, metadata)]

Built on psycopg and pgvector with an HNSW index (cosine distance); apps may equally use psycopg
directly. Needs ``pip install kiln-runtime[vectors]`` (psycopg, pgvector, numpy).
"""

from __future__ import annotations

__all__ = ["Match", "VectorStore"]

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Match:
    id: str
    score: float  # cosine similarity, 1 = same direction
    metadata: dict[str, Any]


class VectorStore:
    def __init__(
        self, url: str | None = None, *, dimensions: int, table: str = "documents"
    ) -> None:
        import psycopg
        from pgvector.psycopg import register_vector
        from psycopg import sql

        if not _TABLE.fullmatch(table):
            raise ValueError(f"table {table!r} must be a lowercase SQL name, e.g. documents")
        url = url or os.environ.get("KILN_VECTOR_URL")
        if not url:
            raise RuntimeError(
                "no KILN_VECTOR_URL: attach a vector store with kiln addons:create vector-store"
            )
        self.table = table
        self.dimensions = dimensions
        self._conn = psycopg.connect(url, autocommit=True)
        register_vector(self._conn)
        self._table = sql.Identifier(table)
        self._conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, embedding vector({}) NOT NULL, "
                "metadata jsonb NOT NULL DEFAULT '{{}}')"
            ).format(self._table, sql.Literal(int(dimensions)))
        )
        self._conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)"
            ).format(sql.Identifier(f"{table}_embedding"), self._table)
        )

    def upsert(
        self,
        ids: Sequence[str],
        vectors: Sequence[Any],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> int:
        import numpy as np
        from psycopg import sql

        if len(ids) != len(vectors) or (metadata is not None and len(metadata) != len(ids)):
            raise ValueError("ids, vectors and metadata must be as long as each other")
        rows = [
            (str(i), np.asarray(v, dtype=np.float32), json.dumps((metadata or [{}] * len(ids))[n]))
            for n, (i, v) in enumerate(zip(ids, vectors, strict=True))
        ]
        with self._conn.cursor() as cursor:
            cursor.executemany(
                sql.SQL(
                    "INSERT INTO {} (id, embedding, metadata) VALUES (%s, %s, %s::jsonb) ON CONFLICT "
                    "(id) DO UPDATE SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata"
                ).format(self._table),
                rows,
            )
        return len(rows)

    def query(self, vector: Any, k: int = 5, filter: dict[str, Any] | None = None) -> list[Match]:
        import numpy as np
        from psycopg import sql

        where = sql.SQL("WHERE metadata @> %s::jsonb" if filter else "")
        params = [json.dumps(filter)] if filter else []
        query = np.asarray(vector, dtype=np.float32)
        rows = self._conn.execute(
            sql.SQL(
                "SELECT id, 1 - (embedding <=> %s) AS score, metadata FROM {} {} "
                "ORDER BY embedding <=> %s LIMIT %s"
            ).format(self._table, where),
            [query, *params, query, int(k)],
        ).fetchall()
        return [Match(row[0], float(row[1]), row[2]) for row in rows]

    def delete(self, ids: Sequence[str]) -> int:
        from psycopg import sql

        cursor = self._conn.execute(
            sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._table), [list(ids)]
        )
        return cursor.rowcount

    def close(self) -> None:
        self._conn.close()
