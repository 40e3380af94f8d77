"""ORM queries compiled once and run many times with new parameters.

A viewer makes one request per frame, and each needs the same three-table lookup by UIDs. Building the SQL of
that query through the ORM takes about fifteen times as long as running it, so the hot lookups are compiled
once per database vendor and then executed directly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.models import QuerySet


class PreparedQuery:
    """``build(*params)`` must return a ``.values()`` query set whose SQL parameters are exactly ``params``.

    Columns named in ``json_columns`` are decoded like a JSONField would decode them.
    """

    def __init__(
        self, build: Callable[..., QuerySet], arity: int, json_columns: tuple[str, ...] = ()
    ) -> None:
        self.build = build
        self.arity = arity
        self.json_columns = json_columns
        self.sql: dict[str, str] = {}
        self.lock = threading.Lock()

    def _sql(self, alias: str) -> str:
        vendor = connections[alias].vendor
        with self.lock:
            if vendor not in self.sql:
                sentinels = tuple(f"\x00param{i}\x00" for i in range(self.arity))
                sql, params = self.build(*sentinels).query.sql_with_params()
                if tuple(params) != sentinels:  # the query must take exactly our parameters, in order
                    raise ValueError(f"the prepared query has parameters {params!r}")
                self.sql[vendor] = sql
            return self.sql[vendor]

    def first(self, *params: str, alias: str = "default") -> dict[str, Any] | None:
        with connections[alias].cursor() as cursor:
            cursor.execute(self._sql(alias), params)
            row = cursor.fetchone()
            if row is None:
                return None
            names = [column[0] for column in cursor.description]
        result = dict(zip(names, row, strict=True))
        for name in self.json_columns:
            if isinstance(result[name], str | bytes):
                result[name] = json.loads(result[name])
        return result
