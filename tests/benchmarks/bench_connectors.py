"""Connector benchmarks: events per provider from one `--once` run against the doubles, replay rate of the
whole ../shared/data (as fast as possible; generation alone and published to Kafka), and the poll-to-topic lag
of a price change.

    .venv/bin/python tests/benchmarks/bench_connectors.py [--no-write] [--lag-interval 3] [--lag-changes 5]

Starts a local Kafka broker (embedded.kafka) in a temporary directory and, where installed, the Pub/Sub
emulator; stops both. Results are merged into tests/benchmarks/results.json under "connectors".
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import httpx  # noqa: E402
import respx  # noqa: E402
from botocore.stub import Stubber  # noqa: E402
from moto import mock_aws  # noqa: E402

from connectors.aws import (  # noqa: E402
    AwsCapacitySource,
    AwsInterruptionSource,
    AwsOnDemandSource,
    AwsSpotAdvisorSource,
    AwsSpotSource,
)
from connectors.azure import AzureEvictionSource, AzurePricesSource  # noqa: E402
from connectors.base import Source  # noqa: E402
from connectors.gcp import GcpPreemptionSource, GcpPricesSource  # noqa: E402
from connectors.lambda_cloud import LambdaSource  # noqa: E402
from connectors.publish import KafkaPublisher  # noqa: E402
from connectors.replay import replay_events  # noqa: E402
from connectors.runner import Runner  # noqa: E402
from connectors.runpod import RunPodSource  # noqa: E402
from connectors.vastai import VastSource  # noqa: E402
from embedded.kafka import LocalKafka, ensure_topics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
FIX = ROOT / "tests" / "connectors" / "fixtures"
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED if SHARED.is_dir() else ROOT / "data" / "sample"
EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
FAST: dict[str, Any] = {"retry_wait_min_s": 0.01, "retry_wait_max_s": 0.1, "rate_per_s": 100.0}
NOW = datetime.now(UTC).replace(microsecond=0)


def fx(name: str) -> Any:
    return json.loads((FIX / name).read_text())


def _client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def aws_doubles(types: list[str]) -> dict[str, Any]:
    """Stubbed EC2 / Pricing clients with paged, realistic series (seeded)."""
    rnd = random.Random(4)
    ec2_spot, ec2_cap, pricing = _client("ec2"), _client("ec2"), _client("pricing")
    s1, s2, s3 = Stubber(ec2_spot), Stubber(ec2_cap), Stubber(pricing)
    from tests.connectors.test_aws import price_list_item  # the recorded shape

    hist = []
    for it in types:
        for az in "abcdf":
            base = rnd.uniform(0.2, 3.0)
            for h in range(3):
                hist.append({"AvailabilityZone": f"us-east-1{az}", "InstanceType": it,
                             "ProductDescription": "Linux/UNIX", "SpotPrice": f"{base * rnd.uniform(0.95, 1.05):.6f}",
                             "Timestamp": NOW - timedelta(minutes=20 * h + 1)})
    pages = [hist[i:i + 40] for i in range(0, len(hist), 40)]
    for i, p in enumerate(pages):
        s1.add_response("describe_spot_price_history",
                        {"SpotPriceHistory": p, **({"NextToken": f"t{i}"} if i < len(pages) - 1 else {})})
    for _ in types:
        s2.add_response("get_spot_placement_scores", {"SpotPlacementScores": [
            {"Region": r, "Score": rnd.randint(1, 10)} for r in ("us-east-1", "us-east-2", "us-west-2")]})
    items = [price_list_item(it, f"{rnd.uniform(0.5, 30):.4f}") for it in types]
    s3.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": items[:10], "NextToken": "n"})
    s3.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": items[10:]})
    for s in (s1, s2, s3):
        s.activate()
    return {"spot": ec2_spot, "cap": ec2_cap, "pricing": pricing}


class FakeEventHub:
    def __init__(self, bodies: list[str]) -> None:
        from azure.eventhub import EventData

        self.events = [EventData(b) for b in bodies]
        self.closed = threading.Event()

    def receive_batch(self, on_event_batch: Any, **_: Any) -> None:
        class Ctx:
            def update_checkpoint(self, e: Any = None) -> None:
                pass

        on_event_batch(Ctx(), self.events)
        self.closed.wait(30)

    def close(self) -> None:
        self.closed.set()


def start_pubsub() -> tuple[subprocess.Popen[bytes] | None, str | None]:
    if not EMULATOR.exists() or shutil.which("java") is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(EMULATOR), "--host=127.0.0.1", f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.3)
    os.killpg(proc.pid, 15)
    return None, None


def once_against_doubles(bootstrap: str, pubsub_host: str | None) -> dict[str, Any]:
    advisor_file = sorted((DATA / "aws-spot-advisor").glob("*.json.gz"))[0]
    with gzip.open(advisor_file, "rt") as fh:
        advisor = json.load(fh)
    types = ["p3.2xlarge", "g5.xlarge", "g5.12xlarge", "g6.xlarge", "g6e.xlarge", "p4d.24xlarge", "p5.48xlarge",
             "g4dn.xlarge", "g4dn.12xlarge", "p3.16xlarge", "g6.48xlarge", "g6e.12xlarge"]
    sources: list[Source] = []
    with respx.mock(assert_all_called=False) as r, mock_aws():
        r.get("https://cloud.lambda.ai/api/v1/instance-types").mock(
            return_value=httpx.Response(200, json=fx("lambda_instance_types.json")))
        r.post("https://api.runpod.io/graphql").mock(
            return_value=httpx.Response(200, json=fx("runpod_gpu_types.json")))
        r.get(url__startswith="https://console.vast.ai/").mock(side_effect=[
            httpx.Response(200, json=fx("vast_page1.json")), httpx.Response(200, json=fx("vast_page2.json"))])
        r.get(url__startswith="https://prices.azure.com/").mock(side_effect=[
            httpx.Response(200, json=fx("azure_prices_page1.json")),
            httpx.Response(200, json=fx("azure_prices_page2.json"))])
        r.get(url__startswith="https://cloudbilling.googleapis.com/").mock(side_effect=[
            httpx.Response(200, json=fx("gcp_skus_page1.json")), httpx.Response(200, json=fx("gcp_skus_page2.json"))])
        r.get("https://spot-bid-advisor.s3.amazonaws.com/spot-advisor-data.json").mock(
            return_value=httpx.Response(200, json=advisor))
        if pubsub_host:
            r.route(host=pubsub_host.split(":")[0]).pass_through()
        aws = aws_doubles(types)
        creds = {"AWS_ACCESS_KEY_ID": "x"}
        kw = {"regions": ["us-east-1", "us-east-2", "us-west-2"], "instance_types": types, **FAST}
        from connectors.aws import gpu_specs

        specs = gpu_specs(_client("ec2"), types)  # describe_instance_types GpuInfo, from moto's real catalogue
        sources += [AwsOnDemandSource(env=creds, clients={("pricing", "us-east-1"): aws["pricing"]},
                                      **{**kw, "regions": ["us-east-1"]}),
                    AwsSpotSource(env=creds, clients={("ec2", "us-east-1"): aws["spot"]},
                                  **{**kw, "regions": ["us-east-1"]}),
                    AwsCapacitySource(env=creds, clients={("ec2", "us-east-1"): aws["cap"]}, **kw),
                    AwsSpotAdvisorSource(env=creds, **kw)]
        sqs, ec2 = _client("sqs"), _client("ec2")
        url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        for itype in ("g5.xlarge", "p5.48xlarge"):
            inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType=itype)["Instances"][0]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({
                "version": "0", "id": f"ev-{inst['InstanceId']}",
                "detail-type": "EC2 Spot Instance Interruption Warning",
                "source": "aws.ec2", "time": NOW.isoformat().replace("+00:00", "Z"), "region": "us-east-1",
                "detail": {"instance-id": inst["InstanceId"], "instance-action": "terminate"}}))
        intr = AwsInterruptionSource(env={**creds, "AWS_SPOT_INTERRUPTION_QUEUE_URL": url},
                                     clients={("sqs", "us-east-1"): sqs, ("ec2", "us-east-1"): ec2}, **kw)
        intr.wait_time_s = 0
        sources.append(intr)
        for src in sources:
            src._specs = dict(specs)  # type: ignore[attr-defined]
        sources += [GcpPricesSource(env={"GCP_API_KEY": "k"}, **FAST)]
        if pubsub_host:
            os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
            from google.cloud import pubsub_v1

            from tests.connectors.test_gcp_pubsub import LOG_ENTRY

            pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
            topic, subp = pub.topic_path("bench", "pre"), sub.subscription_path("bench", "pre")
            pub.create_topic(request={"name": topic})
            sub.create_subscription(request={"name": subp, "topic": topic})
            for i in range(3):
                pub.publish(topic, json.dumps({**LOG_ENTRY, "insertId": f"i{i}"}).encode()).result(30)
            sources.append(GcpPreemptionSource(env={"GCP_PREEMPTION_SUBSCRIPTION": subp}, subscriber=sub,
                                               instance_lookup=lambda *a: "g2-standard-8", timeout_s=5, **FAST))
        from tests.connectors.test_azure_eventhub import activity

        rec = activity("Microsoft.Compute/virtualMachines/evictSpotVM/action",
                       properties={"vmSize": "Standard_NC24ads_A100_v4"})
        hub = FakeEventHub([json.dumps({"records": [rec, {**rec, "correlationId": "2"}]})])
        ev_src = AzureEvictionSource(env={}, consumer=hub, **FAST)
        ev_src.fetch = _drain_after(ev_src, 0.5)  # type: ignore[method-assign]
        sources += [AzurePricesSource(env={}, **FAST), ev_src,
                    LambdaSource(env={"LAMBDA_API_KEY": "k"}, **FAST),
                    RunPodSource(env={"RUNPOD_API_KEY": "k"}, **FAST)]
        vast = VastSource(env={}, **FAST)
        vast.page_size = 3
        sources.append(vast)
        kp = KafkaPublisher(bootstrap)
        t0 = time.perf_counter()
        reports = Runner(sources, kp.publish).run_once(timeout_s=120)
        left = kp.flush(30)
        dt = time.perf_counter() - t0
        hub.close()
    per_provider: Counter[str] = Counter()
    per_source = {}
    for rep in reports.values():
        per_provider[rep.provider] += rep.published
        per_source[rep.name] = {"status": rep.status, "published": rep.published,
                                "by_type": dict(rep.stats.emitted), "rejected": dict(rep.stats.rejected)}
    return {"per_provider": dict(per_provider), "per_source": per_source, "seconds": round(dt, 2),
            "delivered": kp.delivered, "undelivered": left, "failed": kp.failed,
            "pubsub_emulator": bool(pubsub_host)}


def _drain_after(src: AzureEvictionSource, wait_s: float) -> Any:
    orig = src.fetch

    def fetch() -> Any:
        first = list(orig())
        time.sleep(wait_s)  # the receiver thread delivers its first batch
        return first + list(orig())

    return fetch


def replay_rate(bootstrap: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    n = sum(1 for _ in replay_events(DATA))
    gen = time.perf_counter() - t0
    kp = KafkaPublisher(bootstrap)
    t0 = time.perf_counter()
    m = kp.publish_all(replay_events(DATA))
    left = kp.flush(120)
    pub = time.perf_counter() - t0
    return {"data": str(DATA.relative_to(ROOT.parent)) if DATA.is_relative_to(ROOT.parent) else str(DATA),
            "events": n, "generate_seconds": round(gen, 2), "generate_events_per_s": round(n / gen),
            "to_kafka_seconds": round(pub, 2), "to_kafka_events_per_s": round(m / pub), "undelivered": left,
            "failed": kp.failed}


def poll_to_topic_lag(bootstrap: str, interval: float, changes: int) -> dict[str, Any]:
    """A Lambda-shaped double whose price changes at random moments; the runner polls every `interval` s and
    publishes to Kafka; a consumer timestamps arrival. lag = arrival - change."""
    from confluent_kafka import Consumer

    body = fx("lambda_instance_types.json")
    state = {"cents": 1000}
    poll_starts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        poll_starts.append(time.time())
        b = json.loads(json.dumps(body))
        b["data"]["gpu_1x_a10"]["instance_type"]["price_cents_per_hour"] = state["cents"]
        return httpx.Response(200, json=b)

    key_prefix = "lambda|us-east-1||gpu_1x_a10|"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lag-{time.time_ns()}", "auto.offset.reset": "latest",
                  "enable.auto.commit": False})
    c.subscribe(["cloudarb.prices.v1"])
    for _ in range(20):  # wait for the assignment
        c.poll(0.5)
        if c.assignment():
            break
    arrivals: dict[float, float] = {}
    stop_c = threading.Event()

    def consume() -> None:
        while not stop_c.is_set():
            m = c.poll(0.2)
            if m is None or m.error() or not (m.key() or b"").decode().startswith(key_prefix):
                continue
            price = json.loads(m.value())["usd_per_hour"]
            arrivals.setdefault(price, time.time())

    ct = threading.Thread(target=consume, daemon=True)
    ct.start()
    lags, overheads = [], []
    with respx.mock(assert_all_called=False) as r:
        r.get("https://cloud.lambda.ai/api/v1/instance-types").mock(side_effect=answer)
        kp = KafkaPublisher(bootstrap, extra={"linger.ms": 5})
        src = LambdaSource(env={"LAMBDA_API_KEY": "k"}, **FAST)

        def sink(e: Any) -> None:
            kp.publish(e)
            kp._producer.poll(0)

        runner = Runner([src], sink)
        stop = threading.Event()
        rt = threading.Thread(target=runner.run_forever, args=(stop, {"lambda": interval}), daemon=True)
        rt.start()
        time.sleep(interval + 1)
        rnd = random.Random(9)
        for i in range(changes):
            time.sleep(rnd.uniform(0, interval))
            state["cents"] = 1000 + 10 * (i + 1)
            t_change = time.time()
            want = state["cents"] / 100
            deadline = time.time() + interval + 30
            while want not in arrivals and time.time() < deadline:
                kp._producer.poll(0.01)
            if want in arrivals:
                lags.append(arrivals[want] - t_change)
                first_poll = min((t for t in poll_starts if t >= t_change), default=t_change)
                overheads.append(arrivals[want] - first_poll)
        stop.set()
        rt.join(10)
        kp.flush(10)
    stop_c.set()
    ct.join(5)
    c.close()
    return {"poll_interval_s": interval, "changes": changes, "measured": len(lags),
            "lag_s_max": round(max(lags), 3) if lags else None,
            "lag_s_mean": round(sum(lags) / len(lags), 3) if lags else None,
            "poll_to_topic_overhead_ms_max": round(1000 * max(overheads), 1) if overheads else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--lag-interval", type=float, default=3.0)
    ap.add_argument("--lag-changes", type=int, default=5)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-conn-"))
    broker = LocalKafka(tmp / "kafka")
    ps_proc, ps_host = start_pubsub()
    try:
        broker.start()
        ensure_topics(broker.bootstrap)
        once = once_against_doubles(broker.bootstrap, ps_host)
        print(json.dumps(once["per_provider"]), flush=True)
        rate = replay_rate(broker.bootstrap)
        print(json.dumps(rate), flush=True)
        lag = poll_to_topic_lag(broker.bootstrap, a.lag_interval, a.lag_changes)
        print(json.dumps(lag), flush=True)
    finally:
        broker.stop()
        if ps_proc is not None:
            os.killpg(ps_proc.pid, 15)
            ps_proc.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)
    overhead_s = (lag["poll_to_topic_overhead_ms_max"] or 0) / 1000
    intervals = {cls.name: cls.poll_interval_s for cls in (
        AwsOnDemandSource, AwsSpotSource, AwsCapacitySource, AwsSpotAdvisorSource, AwsInterruptionSource,
        GcpPricesSource, GcpPreemptionSource, AzurePricesSource, AzureEvictionSource, LambdaSource, RunPodSource,
        VastSource)}
    out = {
        "once_against_doubles": once,
        "replay": rate,
        "poll_to_topic_lag": lag,
        "worst_case_lag_s_by_source": {k: round(v + overhead_s, 2) for k, v in intervals.items()},
        "machine": "2 shared cores",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not a.no_write:
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        data["connectors"] = out
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {RESULTS} [connectors]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
