"""Seeded, realistic allocation instances built from the real offer data in ../shared/data.

Base catalogue (real): GCP on-demand + spot prices per machine type and region (latest snapshot of
gcp-pricing-history); neocloud per-GPU prices per provider and configuration (latest snapshot of
each gpu-price-tracker file; min..avg range, availability counts as capacity); AWS spot savings %
and interruption bands per instance type and region (aws-spot-advisor). AWS on-demand prices are
not in the data: the us-east-1 list prices below (public price list, mid-2025, approximate) are
scaled per region, and AWS spot = on-demand x (1 - savings%), as the data README suggests.

To reach N offers the base catalogue is sampled with replacement into distinct zones with a small
price jitter, so GPU models, regions, price ratios, spot discounts and interruption bands stay real.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.events import WorkloadSpec
from schemas.gpus import GPU_CATALOGUE
from schemas.market import OfferQuote
from schemas.offers import Market, OfferKey

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

GCP_GPU = {"a100": "A100-40GB", "a100-80gb": "A100-80GB", "h100-80gb": "H100-80GB",
           "h100-80gb-mega": "H100-80GB", "l4": "L4"}
TRACKER_GPU = {"A100_80GB_PCIe": "A100-PCIE-80GB", "A100_80GB_SXM4": "A100-80GB", "B200_180GB": "B200",
               "GH200_96GB": "GH200", "H100_80GB_PCIe": "H100-PCIE-80GB", "H100_80GB_SXM5": "H100-80GB",
               "H200_141GB": "H200"}
# (instance type, GPU model, GPUs, us-east-1 on-demand USD/h) -- public list prices, approximate
AWS_TYPES = [
    ("p3.2xlarge", "V100-16GB", 1, 3.06), ("p3.8xlarge", "V100-16GB", 4, 12.24),
    ("p3.16xlarge", "V100-16GB", 8, 24.48), ("p3dn.24xlarge", "V100-32GB", 8, 31.21),
    ("p4d.24xlarge", "A100-40GB", 8, 32.77), ("p4de.24xlarge", "A100-80GB", 8, 40.97),
    ("p5.48xlarge", "H100-80GB", 8, 55.04), ("p5en.48xlarge", "H200", 8, 63.30),
    ("g4dn.xlarge", "T4", 1, 0.526), ("g4dn.12xlarge", "T4", 4, 3.912),
    ("g5.xlarge", "A10G", 1, 1.006), ("g5.12xlarge", "A10G", 4, 5.672), ("g5.48xlarge", "A10G", 8, 16.288),
    ("g6.xlarge", "L4", 1, 0.805), ("g6.12xlarge", "L4", 4, 4.602), ("g6.48xlarge", "L4", 8, 13.35),
    ("g6e.xlarge", "L40S", 1, 1.861), ("g6e.12xlarge", "L40S", 4, 10.49), ("g6e.48xlarge", "L40S", 8, 30.13),
]
# AWS Spot Advisor bands: interruption frequency over a month -> probability per hour
BAND_MONTHLY = [0.025, 0.075, 0.125, 0.175, 0.30]
NEO_REGIONS = ["us-east", "us-west", "eu-north", "eu-central", "ca-central", "ap-northeast"]


@dataclass(frozen=True)
class BaseOffer:
    provider: str
    region: str
    instance_type: str
    gpu_model: str
    gpus: int
    spot: bool
    price: float
    interrupt: float
    capacity: int | None


def _hourly(monthly: float) -> float:
    return 1.0 - (1.0 - monthly) ** (1.0 / 720.0)


def data_available() -> bool:
    return DATA.is_dir() and (DATA / "gcp-pricing-history").is_dir()


def load_base_catalogue() -> list[BaseOffer]:
    out: list[BaseOffer] = []
    # GCP: latest snapshot
    path = next((DATA / "gcp-pricing-history").glob("*.csv.gz"))
    with gzip.open(path, "rt") as f:
        rows = list(csv.DictReader(f))
    last = max(r["snapshot_time"] for r in rows)
    gcp_spot_pi = _hourly(0.15)   # GCP publishes no frequency: assume the AWS mid band
    for r in rows:
        if r["snapshot_time"] != last or r["accelerator"] not in GCP_GPU:
            continue
        g = int(r["accelerator_count"])
        m = GCP_GPU[r["accelerator"]]
        out.append(BaseOffer("gcp", r["region"], r["machine_type"], m, g, False, float(r["price_hour"]), 0.0, None))
        if r["price_hour_spot"]:
            out.append(BaseOffer("gcp", r["region"], r["machine_type"], m, g, True, float(r["price_hour_spot"]),
                                 gcp_spot_pi, None))
    # AWS: advisor savings and bands
    with gzip.open(next((DATA / "aws-spot-advisor").glob("*.json.gz")), "rt") as f:
        adv = json.load(f)["spot_advisor"]
    for region in sorted(adv):
        lin = adv[region].get("Linux", {})
        mult = 1.0 + 0.3 * ((sum(map(ord, region)) % 97) / 97.0)   # regional premium, 0-30 %
        for it, m, g, od in AWS_TYPES:
            if it not in lin:
                continue
            p = od * mult
            out.append(BaseOffer("aws", region, it, m, g, False, p, 0.0, None))
            s, band = lin[it]["s"], lin[it]["r"]
            out.append(BaseOffer("aws", region, it, m, g, True, p * (1 - s / 100.0),
                                 _hourly(BAND_MONTHLY[band]), None))
    # neocloud tracker: latest line of each GPU file
    for fp in sorted((DATA / "gpu-price-tracker").glob("*.jsonl.gz")):
        model = TRACKER_GPU.get(fp.name.removesuffix(".jsonl.gz"))
        if model is None:
            continue
        with gzip.open(fp, "rt") as f:
            lines = f.read().strip().splitlines()
        snap = json.loads(lines[-1])
        configs = [int(c.rstrip("x")) for c in snap.get("by_config", {}) if c.rstrip("x").isdigit()]
        configs = [c for c in configs if c in (1, 2, 4, 8)] or [1, 8]
        for prov, st in sorted(snap.get("by_provider", {}).items()):
            name = prov.lower().replace(" ", "")
            for i, g in enumerate(configs):
                frac = (i + 1) / (len(configs) + 1)
                per_gpu = st["min"] + frac * (st["avg"] - st["min"])
                region = NEO_REGIONS[(i + len(name)) % len(NEO_REGIONS)]
                cap = max(1, int(st["count"]))
                out.append(BaseOffer(name, region, f"{g}x-{model}", model, g, False, per_gpu * g, 0.0, cap))
    return out


def make_offers(n: int, seed: int, base: Sequence[BaseOffer] | None = None) -> list[OfferQuote]:
    rng = np.random.default_rng(seed)
    base = list(base) if base is not None else load_base_catalogue()
    quotes: list[OfferQuote] = []
    keys: set[str] = set()
    picks = np.concatenate([rng.permutation(len(base)) for _ in range(n // len(base) + 1)])[:n]
    for k, i in enumerate(picks.tolist()):
        b = base[i]
        zone = f"{b.region}-z{k % 7}{chr(97 + (k // 7) % 26)}{k // 182}"
        key = OfferKey(provider=b.provider, region=b.region, zone=zone, instance_type=b.instance_type,
                       gpu_model=b.gpu_model, gpus_per_instance=b.gpus,
                       market=Market.SPOT if b.spot else Market.ON_DEMAND)
        if key.key in keys:
            continue
        keys.add(key.key)
        price = round(b.price * float(rng.uniform(0.93, 1.07)), 4)
        fc = round(price * float(rng.normal(1.0, 0.03)), 4)
        cap = b.capacity
        if cap is None and rng.random() < 0.2:
            cap = int(rng.integers(2, 30))
        quotes.append(OfferQuote(key, price, max(0.01, fc), True, cap, b.interrupt, float(rng.uniform(0, 600))))
    return quotes


def make_workloads(n: int, seed: int, quotes: Sequence[OfferQuote]) -> list[WorkloadSpec]:
    rng = np.random.default_rng(seed + 1)
    per_gpu: dict[str, float] = {}
    for q in quotes:
        m = q.offer.gpu_model
        v = q.usd_per_hour / q.offer.gpus_per_instance
        if not q.is_spot:
            per_gpu[m] = min(per_gpu.get(m, math.inf), v)
    models = sorted(per_gpu, key=lambda m: GPU_CATALOGUE[m].relative_throughput)
    specs: list[WorkloadSpec] = []
    for i in range(n):
        k = int(rng.integers(1, 5))
        lo = int(rng.integers(0, max(1, len(models) - k + 1)))
        acc = models[lo:lo + k]
        tput = {m: round(GPU_CATALOGUE[m].relative_throughput * float(rng.uniform(0.85, 1.15)), 3) for m in acc}
        # a realistic mix: 35 % data-parallel gangs of 8-64 GPUs (one place, some needing NVLink or an
        # InfiniBand-class fabric, with checkpoints to move), the rest independent replicas (inference,
        # sweeps) of 1-16 GPUs, some with a fixed replica size or a provider share
        gang = rng.random() < 0.35
        if gang:
            mn = int(rng.choice([8, 8, 16, 16, 32, 64]))
            mx = mn
            topo: dict[str, object] = {
                "topology": "gang", "interconnect": str(rng.choice(["any", "nvlink", "nvlink", "infiniband"])),
                "state_gb": float(rng.choice([50.0, 200.0, 800.0]))}
        else:
            mn = int(rng.choice([1, 1, 2, 4, 8, 16]))
            mx = mn * int(rng.choice([1, 1, 2]))
            topo = {"topology": "replicas", "state_gb": float(rng.choice([0.0, 10.0, 30.0]))}
            if mn >= 4 and rng.random() < 0.3:
                topo["max_share_per_provider"] = 0.5
        od_cost = mn * max(per_gpu[m] for m in acc)
        budget = round(od_cost * float(rng.uniform(1.3, 2.5)), 2)
        specs.append(WorkloadSpec.model_validate(dict(
            workload_id=f"w{i:05d}", gpu_throughput=tput, min_gpus=mn, max_gpus=mx, budget_usd_per_hour=budget,
            max_spot_share=float(rng.choice([0.0, 0.5, 1.0, 1.0])),
            restart_overhead_h=round(float(rng.uniform(0.1, 1.0)), 2),
            same_region=bool(rng.random() < 0.3), priority=int(rng.integers(1, 6)), **topo)))
    return specs
