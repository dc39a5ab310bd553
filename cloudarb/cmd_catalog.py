"""`cloudarb catalog export --format skypilot|gpuhunt --out DIR`: the live offers as SkyPilot / gpuhunt
catalog files (`outputs/catalog.py`: `DIR/<cloud>/vms.csv` for SkyPilot, `DIR/<provider>.csv` for gpuhunt)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cloudarb.settings import Settings


def cmd_catalog_export(args: argparse.Namespace, s: Settings) -> int:
    from outputs.catalog import current_offers, write_catalog
    from outputs.clickhouse import apply_ddl, get_client

    client = get_client(s.clickhouse_url, s.chdb_path)
    apply_ddl(client, s.clickhouse_db)
    offers = current_offers(client, s.clickhouse_db, include_unavailable=args.include_unavailable)
    files = write_catalog(args.format, offers, Path(args.out))
    for f in files:
        print(f)
    print(f"{len(offers)} offers -> {len(files)} {args.format} file(s) under {args.out}")
    return 0


def register(sub: Any) -> None:
    from outputs.catalog import FORMATS

    c = sub.add_parser("catalog", help="export the live offers as catalogs for SkyPilot / dstack (gpuhunt)")
    c_sub = c.add_subparsers(dest="catalog_cmd", required=True)
    e = c_sub.add_parser("export", help="write the catalog files of one format")
    e.add_argument("--format", required=True, choices=FORMATS)
    e.add_argument("--out", required=True, help="directory (created); files are replaced atomically")
    e.add_argument("--include-unavailable", action="store_true", help="also offers known to have no capacity")
    e.set_defaults(func=cmd_catalog_export)
