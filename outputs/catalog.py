"""CloudArb as a catalog for the tools users already run: the live offers in SkyPilot's and gpuhunt's formats.

The offers are the API's current offers (`outputs.queries.offers_sql`: one row per offer from ClickHouse's
`offer_latest`, latest quote), read through the same ClickHouse client. Offers known to be unavailable are
left out unless asked for.

**SkyPilot** (`skypilot`): one `vms.csv` per cloud, `<out>/<cloud>/vms.csv`, with the columns of SkyPilot's
catalog schema (skypilot-catalog README, schema v5+, in the order SkyPilot's data fetchers write them):

    InstanceType, AcceleratorName, AcceleratorCount, vCPUs, MemoryGiB, GpuInfo, Price, SpotPrice, Region,
    AvailabilityZone

One row per (instance type, region, zone) with the on-demand price in `Price` and the spot price in
`SpotPrice` (empty when that market has no quote). A region-wide on-demand quote (zone '') fills `Price` of
the same instance type's zone rows; it gets a row of its own (empty `AvailabilityZone`) only when no zone of
the region is quoted. `GpuInfo` is the human-readable description SkyPilot's AWS catalog uses, as a Python
literal (`{'Gpus': [{'Name', 'Manufacturer', 'Count', 'MemoryInfo': {'SizeInMiB'}}], 'TotalGpuMemoryInMiB'}`).
Cloud directory names are SkyPilot's where it has one (`SKYPILOT_CLOUD`: `lambdalabs`/`lambda` -> `lambda`,
`vastai` -> `vast`, `oracle` -> `oci`, `digitalocean` -> `do`, `datacrunch` -> `verda`), otherwise our
provider name. Accelerator names are SkyPilot's (`SKYPILOT_GPU`).

**gpuhunt** (`gpuhunt`, dstack): one CSV per provider, `<out>/<provider>.csv` (gpuhunt's provider name where
it differs from ours, `GPUHUNT_PROVIDER`: `lambda` -> `lambdalabs`, `oracle` -> `oci`, `crusoecloud` -> `crusoe`),
with the columns gpuhunt's storage writes (the fields of its `RawCatalogItem`, up to `gpu_vendor`):

    instance_name, location, price, cpu, memory, gpu_count, gpu_name, gpu_memory, spot, disk_size, gpu_vendor

One row per offer: `location` is the zone when the offer has one, else the region; `spot` is `True`/`False`
(gpuhunt reads any case of "true"); `gpu_name` is gpuhunt's name (model without memory, `GPUHUNT_GPU`) and
`gpu_memory` the GPU's memory in GB from `schemas.gpus`; `disk_size` is empty (we do not quote disks).
gpuhunt's newer optional fields (`flags`, `cpu_arch`, `provider_data`) are not written (its loader defaults
them).

**vCPUs and memory** are not in our data. They are filled from `INSTANCE_SPECS`, the providers' published
instance-type tables (AWS EC2 instance types, GCP accelerator-optimized and G2 machine types) for the instance
types listed there, and left empty otherwise (neocloud `<GPU>-<n>x` shapes vary by host).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from outputs.queries import ReadModel
from schemas.gpus import GPU_CATALOGUE

Format = Literal["skypilot", "gpuhunt"]
FORMATS: tuple[str, ...] = ("skypilot", "gpuhunt")

SKYPILOT_COLUMNS = ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo",
                    "Price", "SpotPrice", "Region", "AvailabilityZone"]
GPUHUNT_COLUMNS = ["instance_name", "location", "price", "cpu", "memory", "gpu_count", "gpu_name", "gpu_memory",
                   "spot", "disk_size", "gpu_vendor"]

SKYPILOT_CLOUD = {"lambdalabs": "lambda", "lambda": "lambda", "vastai": "vast", "oracle": "oci", "digitalocean": "do",
                  "datacrunch": "verda"}   # (SkyPilot's catalog directories: sky/catalog/*_catalog.py)
GPUHUNT_PROVIDER = {"lambda": "lambdalabs", "oracle": "oci", "crusoecloud": "crusoe"}   # (gpuhunt's providers/)
# our canonical GPU -> SkyPilot's accelerator name (its catalogs: A100 is the 40 GB part, V100 the 16 GB one)
SKYPILOT_GPU = {"H100-80GB": "H100", "H100-PCIE-80GB": "H100", "A100-80GB": "A100-80GB",
                "A100-PCIE-80GB": "A100-80GB", "A100-40GB": "A100", "V100-16GB": "V100", "V100-32GB": "V100-32GB",
                "RTX-4090": "RTX4090", "RTX-PRO-6000": "RTXPRO6000", "A6000": "RTXA6000"}
# our canonical GPU -> gpuhunt's name (the model; memory is its own column)
GPUHUNT_GPU = {"H100-80GB": "H100", "H100-PCIE-80GB": "H100", "A100-80GB": "A100", "A100-PCIE-80GB": "A100",
               "A100-40GB": "A100", "V100-16GB": "V100", "V100-32GB": "V100", "RTX-4090": "RTX4090",
               "RTX-PRO-6000": "RTXPRO6000"}


def _specs(rows: Iterable[tuple[str, int, float]]) -> dict[str, tuple[int, float]]:
    return {t: (c, m) for t, c, m in rows}


# (vCPUs, memory GiB) per instance type, from the providers' published instance-type tables.
INSTANCE_SPECS: dict[str, tuple[int, float]] = _specs([
    # AWS EC2 accelerated computing
    ("p5.48xlarge", 192, 2048), ("p5e.48xlarge", 192, 2048), ("p5en.48xlarge", 192, 2048),
    ("p4d.24xlarge", 96, 1152), ("p4de.24xlarge", 96, 1152),
    ("p3.2xlarge", 8, 61), ("p3.8xlarge", 32, 244), ("p3.16xlarge", 64, 488), ("p3dn.24xlarge", 96, 768),
    ("p2.xlarge", 4, 61), ("p2.8xlarge", 32, 488), ("p2.16xlarge", 64, 732),
    ("g4dn.xlarge", 4, 16), ("g4dn.2xlarge", 8, 32), ("g4dn.4xlarge", 16, 64), ("g4dn.8xlarge", 32, 128),
    ("g4dn.12xlarge", 48, 192), ("g4dn.16xlarge", 64, 256), ("g4dn.metal", 96, 384),
    ("g5.xlarge", 4, 16), ("g5.2xlarge", 8, 32), ("g5.4xlarge", 16, 64), ("g5.8xlarge", 32, 128),
    ("g5.12xlarge", 48, 192), ("g5.16xlarge", 64, 256), ("g5.24xlarge", 96, 384), ("g5.48xlarge", 192, 768),
    ("g6.xlarge", 4, 16), ("g6.2xlarge", 8, 32), ("g6.4xlarge", 16, 64), ("g6.8xlarge", 32, 128),
    ("g6.12xlarge", 48, 192), ("g6.16xlarge", 64, 256), ("g6.24xlarge", 96, 384), ("g6.48xlarge", 192, 768),
    ("g6e.xlarge", 4, 32), ("g6e.2xlarge", 8, 64), ("g6e.4xlarge", 16, 128), ("g6e.8xlarge", 32, 256),
    ("g6e.12xlarge", 48, 384), ("g6e.16xlarge", 64, 512), ("g6e.24xlarge", 96, 768), ("g6e.48xlarge", 192, 1536),
    # GCP accelerator-optimized (A2, A3) and G2
    ("a2-highgpu-1g", 12, 85), ("a2-highgpu-2g", 24, 170), ("a2-highgpu-4g", 48, 340), ("a2-highgpu-8g", 96, 680),
    ("a2-megagpu-16g", 96, 1360),
    ("a2-ultragpu-1g", 12, 170), ("a2-ultragpu-2g", 24, 340), ("a2-ultragpu-4g", 48, 680),
    ("a2-ultragpu-8g", 96, 1360),
    ("a3-highgpu-1g", 26, 234), ("a3-highgpu-2g", 52, 468), ("a3-highgpu-4g", 104, 936),
    ("a3-highgpu-8g", 208, 1872), ("a3-megagpu-8g", 208, 1872),
    ("g2-standard-4", 4, 16), ("g2-standard-8", 8, 32), ("g2-standard-12", 12, 48), ("g2-standard-16", 16, 64),
    ("g2-standard-24", 24, 96), ("g2-standard-32", 32, 128), ("g2-standard-48", 48, 192),
    ("g2-standard-96", 96, 384),
])

Offer = dict[str, Any]   # as `ReadModel.load_offers` returns them (offer_key, provider, region, zone, ...)


def current_offers(client: Any, db: str, include_unavailable: bool = False) -> list[Offer]:
    """The API's current offers (latest quote per offer) from ClickHouse; unavailable ones left out unless
    asked for (an offer with no capacity signal counts as available)."""
    offers = ReadModel(client, db).load_offers()
    return [o for o in offers if include_unavailable or o.get("available") is not False]


def _num(v: float | int | None) -> str:
    if v is None:
        return ""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(round(f, 6))


def skypilot_cloud(provider: str) -> str:
    return SKYPILOT_CLOUD.get(provider, provider)


def gpuhunt_provider(provider: str) -> str:
    return GPUHUNT_PROVIDER.get(provider, provider)


def _gpu_info(gpu: str, n: int) -> str:
    spec = GPU_CATALOGUE.get(gpu)
    mib = spec.memory_gb * 1024 if spec else 0
    name = SKYPILOT_GPU.get(gpu, gpu)
    info = {"Gpus": [{"Name": name, "Manufacturer": (spec.vendor if spec else "nvidia").upper(), "Count": n,
                      "MemoryInfo": {"SizeInMiB": mib}}], "TotalGpuMemoryInMiB": mib * n}
    return repr(info)


def skypilot_rows(offers: Iterable[Offer]) -> dict[str, list[dict[str, str]]]:
    """{cloud: rows of vms.csv}, rows sorted by (instance type, region, zone)."""
    # (cloud, itype, region, zone) -> [offer of on_demand, offer of spot]
    cells: dict[tuple[str, str, str, str], dict[str, Offer]] = {}
    for o in offers:
        k = (skypilot_cloud(o["provider"]), o["instance_type"], o["region"], o["zone"] or "")
        cur = cells.setdefault(k, {})
        prev = cur.get(o["market"])
        if prev is None or o["usd_per_hour"] < prev["usd_per_hour"]:   # two GPU readings of one type: cheaper
            cur[o["market"]] = o
    zoned = {(c, t, r) for c, t, r, z in cells if z}
    out: dict[str, list[dict[str, str]]] = {}
    for (cloud, itype, region, zone), m in sorted(cells.items()):
        if not zone and (cloud, itype, region) in zoned and "spot" not in m:
            continue   # its on-demand price is carried by the zone rows
        od = m.get("on_demand") or (cells.get((cloud, itype, region, ""), {}).get("on_demand") if zone else None)
        spot = m.get("spot")
        ref = od or spot
        assert ref is not None
        vcpu, mem = INSTANCE_SPECS.get(itype, (None, None))
        out.setdefault(cloud, []).append({
            "InstanceType": itype, "AcceleratorName": str(SKYPILOT_GPU.get(ref["gpu_model"], ref["gpu_model"])),
            "AcceleratorCount": _num(ref["gpus_per_instance"]), "vCPUs": _num(vcpu), "MemoryGiB": _num(mem),
            "GpuInfo": _gpu_info(ref["gpu_model"], int(ref["gpus_per_instance"])),
            "Price": _num(od["usd_per_hour"]) if od else "", "SpotPrice": _num(spot["usd_per_hour"]) if spot else "",
            "Region": region, "AvailabilityZone": zone,
        })
    return out


def gpuhunt_rows(offers: Iterable[Offer]) -> dict[str, list[dict[str, str]]]:
    """{provider: rows of <provider>.csv}, sorted as gpuhunt sorts (gpu count, name, price, location)."""
    out: dict[str, list[dict[str, str]]] = {}
    for o in offers:
        spec = GPU_CATALOGUE.get(o["gpu_model"])
        vcpu, mem = INSTANCE_SPECS.get(o["instance_type"], (None, None))
        out.setdefault(gpuhunt_provider(o["provider"]), []).append({
            "instance_name": o["instance_type"], "location": o["zone"] or o["region"],
            "price": _num(o["usd_per_hour"]), "cpu": _num(vcpu), "memory": _num(mem),
            "gpu_count": _num(o["gpus_per_instance"]), "gpu_name": str(GPUHUNT_GPU.get(o["gpu_model"], o["gpu_model"])),
            "gpu_memory": _num(spec.memory_gb) if spec else "", "spot": str(o["market"] == "spot"),
            "disk_size": "", "gpu_vendor": spec.vendor if spec else "",
        })
    for rows in out.values():
        rows.sort(key=lambda r: (int(r["gpu_count"]), r["instance_name"], float(r["price"]), r["location"]))
    return out


ROWS: dict[str, tuple[list[str], Callable[[Iterable[Offer]], dict[str, list[dict[str, str]]]]]] = {
    "skypilot": (SKYPILOT_COLUMNS, skypilot_rows), "gpuhunt": (GPUHUNT_COLUMNS, gpuhunt_rows)}


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def catalog_csv(fmt: str, cloud: str, offers: Iterable[Offer]) -> str | None:
    """One cloud's file of the format, or None when the cloud has no offers."""
    columns, build = ROWS[fmt]
    rows = build(offers).get(cloud)
    return None if rows is None else to_csv(columns, rows)


def relpath(fmt: str, cloud: str) -> Path:
    return Path(cloud) / "vms.csv" if fmt == "skypilot" else Path(f"{cloud}.csv")


def write_catalog(fmt: str, offers: Iterable[Offer], out: Path | str) -> list[Path]:
    """Write every cloud's file of the format under `out`; returns the files written."""
    columns, build = ROWS[fmt]
    written = []
    for cloud, rows in sorted(build(offers).items()):
        p = Path(out) / relpath(fmt, cloud)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".csv.tmp")
        tmp.write_text(to_csv(columns, rows), encoding="utf-8")
        tmp.replace(p)   # readers never see half a file
        written.append(p)
    return written


def catalog_router(client: Any, db: str, auth: Any) -> Any:
    """`GET /v1/catalog/{format}/{cloud}` (text/csv): one cloud's file of the format, from the live offers.
    `auth` is the API's dependency for the role allowed to read it (e.g. `Depends(auth("viewer"))`)."""
    from fastapi import APIRouter, HTTPException
    from fastapi import Path as PathParam
    from fastapi.responses import PlainTextResponse

    router = APIRouter(tags=["market"])

    @router.get("/v1/catalog/{fmt}/{cloud}", dependencies=[auth], response_class=PlainTextResponse, response_model=None,
                responses={200: {"content": {"text/csv": {}}}, 404: {"description": "no offers for that cloud"}})
    def catalog(fmt: Literal["skypilot", "gpuhunt"],
                cloud: str = PathParam(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=40),
                include_unavailable: bool = False) -> PlainTextResponse:
        offers = current_offers(client, db, include_unavailable)
        body = catalog_csv(fmt, cloud, offers)
        if body is None:
            known = sorted(ROWS[fmt][1](offers))
            raise HTTPException(404, f"no offers for cloud {cloud!r} in the {fmt} catalog; clouds: {known}")
        name = "vms.csv" if fmt == "skypilot" else f"{cloud}.csv"
        return PlainTextResponse(body, media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'inline; filename="{name}"'})

    return router
