"""One way to reach ClickHouse: clickhouse-connect, on embedded chdb by default or a real server.

`CLICKHOUSE_URL` (e.g. http://user:pass@host:8123/cloudarb) switches to a server with the same code.
chdb: one process owns a chdb directory; within a process, one path only (clients are cached per path).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DDL_DIR = Path(__file__).resolve().parent.parent / "infra" / "clickhouse"
DEFAULT_DB = "cloudarb"

_lock = threading.Lock()
_chdb_clients: dict[str, Any] = {}


def get_client(url: str | None = None, chdb_path: Path | str | None = None) -> Any:
    """A clickhouse-connect client: `url` for a server, else chdb at `chdb_path`."""
    import clickhouse_connect

    if url:
        u = urlparse(url)
        return clickhouse_connect.get_client(
            host=u.hostname or "localhost", port=u.port or (8443 if u.scheme == "https" else 8123),
            username=u.username or "default", password=u.password or "", secure=u.scheme == "https",
        )
    if chdb_path is None:
        raise ValueError("either CLICKHOUSE_URL or a chdb path is required")
    path = str(Path(chdb_path).resolve())
    with _lock:
        if path not in _chdb_clients:
            Path(path).mkdir(parents=True, exist_ok=True)
            _chdb_clients[path] = clickhouse_connect.get_client(interface="chdb", path=path)
        return _chdb_clients[path]


def ddl_statements(db: str = DEFAULT_DB) -> list[str]:
    """Every DDL statement in infra/clickhouse/*.sql, in file order, with {db} substituted."""
    out: list[str] = []
    for f in sorted(DDL_DIR.glob("*.sql")):
        text = f.read_text()
        for chunk in re.split(r"^\s*;\s*$", text, flags=re.M):
            body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
            if body:
                out.append(body.replace("{db}", db))
    return out


def apply_ddl(client: Any, db: str = DEFAULT_DB) -> int:
    """Apply all DDL (idempotent: IF NOT EXISTS, and one-off backfills guarded by emptiness). Returns the count."""
    stmts = ddl_statements(db)
    for s in stmts:
        client.command(s)
    return len(stmts)


def table_counts(client: Any, db: str = DEFAULT_DB) -> dict[str, int]:
    """Distinct rows per table (FINAL collapses any not-yet-merged redeliveries)."""
    names = [r[0] for r in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree' ORDER BY name",
        parameters={"db": db}).result_rows]
    return {n: int(client.query(f"SELECT count() FROM {db}.{n} FINAL").result_rows[0][0]) for n in names}
