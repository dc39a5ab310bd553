"""Catalog export: the live offers as SkyPilot `vms.csv` per cloud and gpuhunt CSV per provider.

Files are round-tripped through each format's public column set (tests/outputs/fixtures/catalog/, written by us
from the public formats): written, read back with csv.DictReader, the header must equal the public column
list exactly and the values must survive. Also on real offers (the sample data replayed into chdb), through
the API route and through the CLI command."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from outputs.catalog import (
    GPUHUNT_COLUMNS,
    SKYPILOT_COLUMNS,
    current_offers,
    gpuhunt_provider,
    gpuhunt_rows,
    skypilot_rows,
    write_catalog,
)

FIX = Path(__file__).parent / "fixtures" / "catalog"


def public_columns(name: str) -> list[str]:
    with (FIX / name).open(newline="") as f:
        return list(csv.DictReader(f).fieldnames or [])


def read(p: Path) -> tuple[list[str], list[dict[str, str]]]:
    with p.open(newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        rows = list(r)
        return list(r.fieldnames or []), rows


def offer(provider: str, region: str, zone: str, itype: str, gpu: str, n: int, market: str,
          usd: float, available: bool | None = None) -> dict[str, Any]:
    key = "|".join((provider, region, zone, itype, gpu, str(n), market))
    return {"offer_key": key, "provider": provider, "region": region, "zone": zone, "instance_type": itype,
            "gpu_model": gpu, "gpus_per_instance": n, "market": market, "usd_per_hour": usd, "available": available}


OFFERS = [
    offer("aws", "us-east-1", "", "p5.48xlarge", "H100-80GB", 8, "on_demand", 98.32),
    offer("aws", "us-east-1", "us-east-1a", "p5.48xlarge", "H100-80GB", 8, "spot", 31.5),
    offer("aws", "us-east-1", "us-east-1b", "p5.48xlarge", "H100-80GB", 8, "spot", 33.25),
    offer("gcp", "us-central1", "", "a2-highgpu-1g", "A100-40GB", 1, "on_demand", 3.673385),
    offer("gcp", "us-central1", "", "a2-highgpu-1g", "A100-40GB", 1, "spot", 1.1),
    offer("lambdalabs", "us-west-1", "", "H100-80GB-1x", "H100-80GB", 1, "on_demand", 2.49),
]


def test_public_column_sets_are_ours() -> None:
    assert public_columns("skypilot_vms.csv") == SKYPILOT_COLUMNS
    assert public_columns("gpuhunt.csv") == GPUHUNT_COLUMNS


def test_skypilot_round_trip(tmp_path: Path) -> None:
    files = write_catalog("skypilot", OFFERS, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in files) == [
        "aws/vms.csv", "gcp/vms.csv", "lambda/vms.csv"]
    header, rows = read(tmp_path / "aws" / "vms.csv")
    assert header == public_columns("skypilot_vms.csv")
    # the region-wide on-demand price is carried by each quoted zone; no zone-less row of its own
    assert [(r["AvailabilityZone"], r["Price"], r["SpotPrice"]) for r in rows] == [
        ("us-east-1a", "98.32", "31.5"), ("us-east-1b", "98.32", "33.25")]
    assert rows[0]["AcceleratorName"] == "H100" and rows[0]["AcceleratorCount"] == "8"
    assert (rows[0]["vCPUs"], rows[0]["MemoryGiB"]) == ("192", "2048")
    assert "'TotalGpuMemoryInMiB': 655360" in rows[0]["GpuInfo"]
    header, rows = read(tmp_path / "gcp" / "vms.csv")
    _, sample = read(FIX / "skypilot_vms.csv")
    assert rows == sample   # our row for the GCP offers is the example row of the public shape, value for value
    _, rows = read(tmp_path / "lambda" / "vms.csv")
    assert rows[0]["vCPUs"] == rows[0]["MemoryGiB"] == "" and rows[0]["SpotPrice"] == ""   # unknown shape


def test_gpuhunt_round_trip(tmp_path: Path) -> None:
    files = write_catalog("gpuhunt", OFFERS, tmp_path)
    assert sorted(p.name for p in files) == ["aws.csv", "gcp.csv", "lambdalabs.csv"]
    header, rows = read(tmp_path / "aws.csv")
    assert header == public_columns("gpuhunt.csv")
    assert [(r["location"], r["price"], r["spot"]) for r in rows] == [
        ("us-east-1a", "31.5", "True"), ("us-east-1b", "33.25", "True"), ("us-east-1", "98.32", "False")]
    r = rows[0]
    assert (r["instance_name"], r["cpu"], r["memory"], r["gpu_count"], r["gpu_name"], r["gpu_memory"],
            r["disk_size"], r["gpu_vendor"]) == ("p5.48xlarge", "192", "2048", "8", "H100", "80", "", "nvidia")
    _, rows = read(tmp_path / "gcp.csv")
    assert {(r["gpu_name"], r["gpu_memory"], r["spot"]) for r in rows} == {("A100", "40", "False"),
                                                                           ("A100", "40", "True")}


def test_each_tool_gets_its_own_names_for_the_clouds(tmp_path: Path) -> None:
    offers = [offer("oracle", "us-ashburn-1", "", "BM.GPU.H100.8", "H100-80GB", 8, "on_demand", 80.0),
              offer("digitalocean", "nyc2", "", "gpu-h100x1-80gb", "H100-80GB", 1, "on_demand", 3.39),
              offer("lambda", "us-east-1", "", "gpu_1x_h100_sxm5", "H100-80GB", 1, "on_demand", 2.99),
              offer("crusoecloud", "us-east1", "", "h100-80gb-sxm-ib.8x", "H100-80GB", 8, "spot", 16.0)]
    sky = sorted(p.relative_to(tmp_path).as_posix() for p in write_catalog("skypilot", offers, tmp_path / "s"))
    assert sky == ["s/crusoecloud/vms.csv", "s/do/vms.csv", "s/lambda/vms.csv", "s/oci/vms.csv"]
    hunt = sorted(p.name for p in write_catalog("gpuhunt", offers, tmp_path / "g"))
    assert hunt == ["crusoe.csv", "digitalocean.csv", "lambdalabs.csv", "oci.csv"]


def test_unavailable_offers_left_out_unless_asked() -> None:
    gone = offer("gcp", "us-central1", "", "a2-highgpu-2g", "A100-40GB", 2, "spot", 2.2, available=False)

    class Stub:
        def load_offers(self) -> list[dict[str, Any]]:
            return [*OFFERS, gone]

    import outputs.catalog as cat

    real = cat.ReadModel
    cat.ReadModel = lambda client, db: Stub()  # type: ignore[assignment,misc,return-value]
    try:
        assert gone not in current_offers(None, "db")
        assert gone in current_offers(None, "db", include_unavailable=True)
    finally:
        cat.ReadModel = real  # type: ignore[misc]


# --- real offers: the sample data replayed into chdb ----------------------------------------------------


def test_sample_offers_export(loaded_db: tuple[Any, str, list[Any]], tmp_path: Path) -> None:
    client, db, _ = loaded_db
    offers = current_offers(client, db, include_unavailable=True)
    assert len(offers) > 50
    write_catalog("gpuhunt", offers, tmp_path / "gh")
    n = 0
    for p in (tmp_path / "gh").glob("*.csv"):
        header, rows = read(p)
        assert header == public_columns("gpuhunt.csv")
        n += len(rows)
        mine = {(o["instance_type"], o["zone"] or o["region"], o["market"] == "spot"): o["usd_per_hour"]
                for o in offers if gpuhunt_provider(o["provider"]) == p.stem}
        assert {(r["instance_name"], r["location"], r["spot"] == "True"): float(r["price"]) for r in rows} == mine
    assert n == len(offers)
    write_catalog("skypilot", offers, tmp_path / "sky")
    rows_by_cloud = {}
    for p in (tmp_path / "sky").glob("*/vms.csv"):
        header, rows = read(p)
        assert header == public_columns("skypilot_vms.csv")
        rows_by_cloud[p.parent.name] = rows
    assert "lambda" in rows_by_cloud and "lambdalabs" not in rows_by_cloud
    gcp = {(r["InstanceType"], r["Region"]): r for r in rows_by_cloud["gcp"]}
    od = {(o["instance_type"], o["region"]): o["usd_per_hour"] for o in offers
          if o["provider"] == "gcp" and o["market"] == "on_demand"}
    sp = {(o["instance_type"], o["region"]): o["usd_per_hour"] for o in offers
          if o["provider"] == "gcp" and o["market"] == "spot"}
    for k, price in od.items():
        assert float(gcp[k]["Price"]) == pytest.approx(price)
        if k in sp:
            assert float(gcp[k]["SpotPrice"]) == pytest.approx(sp[k])
    one = next(r for (t, _), r in gcp.items() if t == "a2-highgpu-1g")
    assert (one["AcceleratorName"], one["vCPUs"], one["MemoryGiB"]) == ("A100", "12", "85")
    assert sum(len(v) for v in skypilot_rows(offers).values()) <= len(offers)
    assert sum(len(v) for v in gpuhunt_rows(offers).values()) == len(offers)


def test_api_route(loaded_db: tuple[Any, str, list[Any]]) -> None:
    from fastapi import Depends, FastAPI, Header, HTTPException
    from fastapi.testclient import TestClient

    from outputs.catalog import catalog_router

    client, db, _ = loaded_db

    def viewer(x_api_key: str | None = Header(None)) -> None:
        if x_api_key != "k":
            raise HTTPException(401, "no key")

    app = FastAPI()
    app.include_router(catalog_router(client, db, Depends(viewer)))
    tc = TestClient(app)
    assert tc.get("/v1/catalog/skypilot/gcp").status_code == 401
    r = tc.get("/v1/catalog/skypilot/gcp", headers={"X-API-Key": "k"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(r.text.splitlines()))
    assert rows and list(rows[0]) == SKYPILOT_COLUMNS
    r = tc.get("/v1/catalog/gpuhunt/runpod", headers={"X-API-Key": "k"})
    assert r.status_code == 200 and r.text.splitlines()[0] == ",".join(GPUHUNT_COLUMNS)
    r = tc.get("/v1/catalog/skypilot/nowhere", headers={"X-API-Key": "k"})
    assert r.status_code == 404 and "gcp" in r.json()["detail"]
    assert tc.get("/v1/catalog/sky/gcp", headers={"X-API-Key": "k"}).status_code == 422


def test_cli_export(loaded_db: tuple[Any, str, list[Any]], chdb_session_path: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    from cloudarb import cmd_catalog

    _, db, _ = loaded_db
    p = argparse.ArgumentParser()
    cmd_catalog.register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["catalog", "export", "--format", "skypilot", "--out", str(tmp_path),
                         "--include-unavailable"])
    s = SimpleNamespace(clickhouse_url=os.environ.get("CLICKHOUSE_URL"), chdb_path=chdb_session_path,
                        clickhouse_db=db)
    assert args.func(args, s) == 0
    assert (tmp_path / "gcp" / "vms.csv").exists() and "file(s) under" in capsys.readouterr().out
