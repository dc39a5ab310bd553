"""Executors: dry run by default, opt-in real executors (AWS on moto, Lambda and RunPod on HTTP
doubles), idempotence on decision id (also across restarts), records in ClickHouse, and the guard:
market pricing, assignments, caps ($/h, instances, churn in total and per workload), decision time
bounds; a refused decision does nothing and is recorded with its reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from outputs.executor_guard import Caps, ClickHouseLatestPrices, MarketPrices
from outputs.executors import (
    ActionRecord,
    AwsExecutor,
    ExecutorRunner,
    LambdaExecutor,
    RunPodExecutor,
    executors_from_env,
)
from schemas.events import AllocationDecided, Assignment, ChangeAction, PlanChange, PriceObserved
from schemas.kafka import kafka_security_config
from schemas.offers import Market, OfferKey

T = datetime.now(UTC)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

Change = tuple[ChangeAction, OfferKey | None, OfferKey | None, int]


def offer(provider: str, it: str, market: Market = Market.ON_DEMAND, region: str = "us-east-1") -> OfferKey:
    return OfferKey(provider=provider, region=region, instance_type=it, gpu_model="A100-80GB", gpus_per_instance=1,
                    market=market)


def decision(did: str, changes: list[Change], wid: str = "w", per: float = 2.0, at: datetime | None = None,
             assign: bool = True) -> AllocationDecided:
    """A decision whose assignments match its changes (unless `assign` is False), at `per` $/h per instance."""
    assigns = [Assignment(workload_id=wid, offer=to, instances=n, usd_per_hour=per * n)
               for _, _, to, n in changes if to is not None and assign]
    return AllocationDecided(event_id=did, decided_at=at or T, workload_ids=[wid], assignments=assigns,
                             reason="test", changes=[PlanChange(action=a, workload_id=wid, from_offer=f, to_offer=to,
                                                                instances=n) for a, f, to, n in changes])


def market(*offers: OfferKey, usd: float = 2.0) -> MarketPrices:
    return MarketPrices({o.key: usd for o in offers})


class Recorder:
    """A real (non dry-run) executor that records what it was asked to do."""

    name = "recorder"

    def __init__(self) -> None:
        self.launched: list[tuple[str, int]] = []
        self.terminated: list[str] = []

    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str) -> list[str]:
        self.launched.append((offer.key, instances))
        return [f"r-{action_id[:8]}-{i}" for i in range(instances)]

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None:
        self.terminated += list(resource_ids)


class Clock:
    def __init__(self, t: datetime = NOW) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def real_runner(prices: MarketPrices, caps: Caps | None = None, clock: Clock | None = None,
                **kw: Any) -> tuple[ExecutorRunner, Recorder]:
    rec = Recorder()
    r = ExecutorRunner({"aws": rec}, enabled={"aws"}, caps=caps or Caps(), prices=prices,  # type: ignore[dict-item]
                       clock=clock or Clock(), **kw)
    return r, rec


def refused(recs: list[ActionRecord], why: str) -> bool:
    return bool(recs) and all(x.status == "refused" and why in x.detail for x in recs)


def test_dry_run_default_recorded_and_idempotent(chdb_client: tuple[Any, str]) -> None:
    client, db = chdb_client
    a, b = offer("aws", "p4d.24xlarge"), offer("aws", "p5.48xlarge", Market.SPOT)
    # an AWS executor is configured but aws is not enabled: dry run only
    r = ExecutorRunner({"aws": AwsExecutor(image_id="ami-x")}, enabled=(), client=client, db=db, prices=market(a, b))
    d1 = decision("d1", [(ChangeAction.LAUNCH, None, a, 2)])
    recs = r.handle(d1)
    assert [(x.executor, x.action, x.status, x.instances) for x in recs] == [("dry-run", "launch", "planned", 2)]
    assert r.handle(d1) == []  # same decision again: nothing
    d2 = decision("d2", [(ChangeAction.MIGRATE, a, b, 2)])
    recs = r.handle(d2)
    assert [(x.action, x.offer_key, x.status) for x in recs] == [("launch", b.key, "planned"),
                                                                 ("terminate", a.key, "planned")]
    rows = client.query(f"SELECT decision_id, action, status FROM {db}.executor_actions FINAL ORDER BY at").result_rows
    assert len(rows) == 3
    # a restarted runner knows both decisions and what is running
    r2 = ExecutorRunner(client=client, db=db)
    assert r2.handle(d1) == [] and r2.handle(d2) == []
    assert r2.running() == (2, pytest.approx(4.0))


def test_aws_on_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        import boto3

        ec2 = boto3.client("ec2", region_name="us-east-1")
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        a, b = offer("aws", "p4d.24xlarge"), offer("aws", "g5.xlarge", Market.SPOT)
        r = ExecutorRunner({"aws": AwsExecutor(image_id=ami)}, enabled={"aws"}, caps=Caps(max_instances=10),
                           prices=market(a, b))
        recs = r.handle(decision("d1", [(ChangeAction.LAUNCH, None, a, 2)]))
        assert recs[0].status == "done" and len(recs[0].resource_ids) == 2
        first = recs[0].resource_ids
        recs = r.handle(decision("d2", [(ChangeAction.MIGRATE, a, b, 1)]))
        assert [(x.action, x.status) for x in recs] == [("launch", "done"), ("terminate", "done")]
        states = {i["InstanceId"]: (i["State"]["Name"], i.get("InstanceLifecycle"))
                  for res in ec2.describe_instances()["Reservations"] for i in res["Instances"]}
        assert all(states[i][0] in ("shutting-down", "terminated") for i in first)
        assert states[recs[0].resource_ids[0]] == ("running", "spot")
        # create_fleet path with a launch template
        lt = ec2.create_launch_template(LaunchTemplateName="cloudarb", LaunchTemplateData={"ImageId": ami})
        fleet = AwsExecutor(launch_template_id=lt["LaunchTemplate"]["LaunchTemplateId"], use_fleet=True)
        ids = fleet.launch("act-1", offer("aws", "g5.xlarge"), 2, "w")
        assert len(ids) == 2
        # a failure (here: EC2 refuses the call) is recorded, not raised, and holds no credentials
        from botocore.exceptions import ClientError

        class Refusing(AwsExecutor):
            def launch(self, *args: Any) -> list[str]:
                raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message": "no p4d"}},
                                  "RunInstances")

        bad = ExecutorRunner({"aws": Refusing(image_id=ami)}, enabled={"aws"}, prices=market(a))
        rec = bad.handle(decision("d9", [(ChangeAction.LAUNCH, None, a, 1)]))[0]
        assert rec.status == "failed" and "InsufficientInstanceCapacity" in rec.detail
        assert "testing" not in rec.detail


@respx.mock
def test_lambda_and_runpod_http_doubles() -> None:
    secret = "sk-lambda-SECRET"
    launch = respx.post("https://cloud.lambdalabs.com/api/v1/instance-operations/launch").mock(
        return_value=httpx.Response(200, json={"data": {"instance_ids": ["l-1", "l-2"]}}))
    term = respx.post("https://cloud.lambdalabs.com/api/v1/instance-operations/terminate").mock(
        return_value=httpx.Response(200, json={"data": {"terminated_instances": []}}))
    pods = iter(["p-1", "p-2"])
    respx.post("https://rest.runpod.io/v1/pods").mock(side_effect=lambda req: httpx.Response(201, json={
        "id": next(pods)}))
    delete = respx.delete(url__regex=r"https://rest\.runpod\.io/v1/pods/p-\d").mock(return_value=httpx.Response(204))
    lam, rp = offer("lambda", "gpu_1x_a100_sxm4", region="us-west-1"), offer("runpod", "NVIDIA A100 80GB PCIe",
                                                                               Market.SPOT, region="eu-ro-1")
    r = ExecutorRunner({"lambda": LambdaExecutor(secret, ssh_key_names=["me"]), "runpod": RunPodExecutor("sk-rp")},
                       enabled={"lambda", "runpod"}, prices=market(lam, rp))
    recs = r.handle(decision("d1", [(ChangeAction.LAUNCH, None, lam, 2)]))
    assert recs[0].status == "done" and recs[0].resource_ids == ["l-1", "l-2"]
    sent = json.loads(launch.calls[0].request.content)
    assert sent == {"region_name": "us-west-1", "instance_type_name": "gpu_1x_a100_sxm4", "ssh_key_names": ["me"],
                    "quantity": 2, "name": "cloudarb-w"}
    assert launch.calls[0].request.headers["Authorization"] == f"Bearer {secret}"
    recs = r.handle(decision("d2", [(ChangeAction.MIGRATE, lam, rp, 2)]))
    assert [(x.action, x.status) for x in recs] == [("launch", "done"), ("terminate", "done")]
    assert json.loads(term.calls[0].request.content) == {"instance_ids": ["l-1", "l-2"]}
    assert recs[0].resource_ids == ["p-1", "p-2"]
    pod = json.loads(respx.calls[2].request.content)
    assert pod["gpuTypeIds"] == ["NVIDIA A100 80GB PCIe"] and pod["interruptible"] is True
    recs = r.handle(decision("d3", [(ChangeAction.TERMINATE, rp, None, 2)]))
    assert recs[0].status == "done" and delete.call_count == 2
    # provider error: recorded as failed, the API key is not in the record
    respx.post("https://cloud.lambdalabs.com/api/v1/instance-operations/launch").mock(
        return_value=httpx.Response(400, json={"error": {"message": "insufficient capacity"}}))
    rec = r.handle(decision("d4", [(ChangeAction.LAUNCH, None, lam, 1)], wid="w2"))[0]
    assert rec.status == "failed" and "insufficient capacity" in rec.detail and secret not in rec.detail


def test_executors_from_env() -> None:
    ex, enabled = executors_from_env({"RUNPOD_API_KEY": "k"})
    assert ex == {} and enabled == set()  # no opt-in, no executor
    ex, enabled = executors_from_env({"CLOUDARB_EXECUTE": "runpod,aws", "RUNPOD_API_KEY": "k",
                                      "CLOUDARB_AWS_IMAGE_ID": "ami-1"})
    assert set(ex) == {"runpod", "aws"} and enabled == {"runpod", "aws"}


# -- the guard: one test per cap / refusal, each asserting nothing was done and the reason recorded

P5 = offer("aws", "p5.48xlarge")
P5_MARKET = 98.32  # $/h per instance


def test_usd_cap_prices_at_market_not_at_the_decisions_word() -> None:
    """16 x p5.48xlarge that the decision claims cost $0.01/h each: at market that is $1,573/h > $200/h."""
    r, ex = real_runner(market(P5, usd=P5_MARKET), Caps(max_instances=16, max_usd_per_hour=200))
    recs = r.handle(decision("lie", [(ChangeAction.LAUNCH, None, P5, 16)], per=0.01, at=NOW))
    assert refused(recs, "$1573.12/h at market prices > max $200.00/h")
    assert recs[0].usd_per_hour == pytest.approx(16 * P5_MARKET)  # recorded at the market price
    assert ex.launched == [] and r.running() == (0, 0)
    # the same lie for 2 instances is within the cap: launched, and booked at market
    recs = r.handle(decision("small", [(ChangeAction.LAUNCH, None, P5, 2)], per=0.01, at=NOW))
    assert [x.status for x in recs] == ["done"] and ex.launched == [(P5.key, 2)]
    assert r.running() == (2, pytest.approx(2 * P5_MARKET))


def test_decision_price_above_market_counts() -> None:
    """max(market, decision): a decision quoting more than the market is held to its own price."""
    a = offer("aws", "p4d.24xlarge")
    r, ex = real_runner(market(a, usd=1.0), Caps(max_usd_per_hour=5.0))
    recs = r.handle(decision("d", [(ChangeAction.LAUNCH, None, a, 2)], per=3.0, at=NOW))
    assert refused(recs, "$6.00/h") and ex.launched == []


def test_instances_cap() -> None:
    a = offer("aws", "p4d.24xlarge")
    r, ex = real_runner(market(a), Caps(max_instances=3))
    assert [x.status for x in r.handle(decision("d1", [(ChangeAction.LAUNCH, None, a, 2)], at=NOW))] == ["done"]
    recs = r.handle(decision("d2", [(ChangeAction.LAUNCH, None, a, 2)], wid="w2", at=NOW))
    assert refused(recs, "cap: 2+2 instances > max 3")
    assert ex.launched == [(a.key, 2)] and r.running()[0] == 2


def test_churn_cap_launch_terminate_pairs() -> None:
    """10 launch/terminate pairs of 16 instances (160 launches unguarded): at most 48 per rolling hour."""
    clock = Clock()
    r, ex = real_runner(market(P5, usd=10.0), Caps(max_instances=16, max_usd_per_hour=200, max_launches_per_hour=48,
                                                   max_workload_launches_per_hour=1000), clock)
    statuses = []
    for i in range(10):
        up = r.handle(decision(f"up{i}", [(ChangeAction.LAUNCH, None, P5, 16)], at=NOW))
        r.handle(decision(f"down{i}", [(ChangeAction.TERMINATE, P5, None, 16)], at=NOW))
        statuses.append(up[0].status)
    assert statuses == ["done"] * 3 + ["refused"] * 7
    assert sum(n for _, n in ex.launched) == 48
    assert all("48 (churn)" in x.detail for x in r.records if x.status == "refused")
    # the window rolls: an hour later launches are allowed again
    clock.t = NOW + timedelta(hours=1, seconds=1)
    recs = r.handle(decision("later", [(ChangeAction.LAUNCH, None, P5, 16)], at=clock.t))
    assert [x.status for x in recs] == ["done"]


def test_per_workload_launch_cap() -> None:
    a = offer("aws", "p4d.24xlarge")
    r, ex = real_runner(market(a), Caps(max_launches_per_hour=1000, max_workload_launches_per_hour=4))
    assert r.handle(decision("u1", [(ChangeAction.LAUNCH, None, a, 4)], at=NOW))[0].status == "done"
    assert r.handle(decision("t1", [(ChangeAction.TERMINATE, a, None, 4)], at=NOW))[0].status == "done"
    recs = r.handle(decision("u2", [(ChangeAction.LAUNCH, None, a, 1)], at=NOW))
    assert refused(recs, "cap: 4+1 instances launched for workload w in the last hour > max 4")
    assert ex.launched == [(a.key, 4)]
    # another workload has its own budget
    assert r.handle(decision("u3", [(ChangeAction.LAUNCH, None, a, 4)], wid="w2", at=NOW))[0].status == "done"


def test_change_without_assignment_is_refused_whole() -> None:
    """A migrate to an offer the decision assigns to nobody: neither the launch nor the terminate runs."""
    a, b = offer("aws", "p4d.24xlarge"), offer("aws", "p5.48xlarge")
    r, ex = real_runner(market(a, b))
    assert r.handle(decision("d1", [(ChangeAction.LAUNCH, None, a, 2)], at=NOW))[0].status == "done"
    recs = r.handle(decision("d2", [(ChangeAction.MIGRATE, a, b, 2)], at=NOW, assign=False))
    assert [x.action for x in recs] == ["launch", "terminate"]
    assert refused(recs, "no matching assignment")
    assert ex.launched == [(a.key, 2)] and ex.terminated == [] and r.running()[0] == 2
    # more instances than assigned: refused too
    d = decision("d3", [(ChangeAction.LAUNCH, None, b, 1)], at=NOW)
    d = d.model_copy(update={"changes": [d.changes[0].model_copy(update={"instances": 8})]})
    assert refused(r.handle(d), "would run 8, the decision assigns 1") and ex.launched == [(a.key, 2)]


def test_no_partial_apply() -> None:
    """A valid launch followed by one over the cap in the same decision: neither runs."""
    a, b = offer("aws", "p4d.24xlarge"), offer("aws", "p5.48xlarge")
    r, ex = real_runner(market(a, b), Caps(max_instances=4))
    d = decision("d", [(ChangeAction.LAUNCH, None, a, 2), (ChangeAction.LAUNCH, None, b, 3)], at=NOW)
    recs = r.handle(d)
    assert len(recs) == 2 and refused(recs, "change 1: launch 3 x") and refused(recs, "2+3 instances > max 4")
    assert ex.launched == [] and r.running() == (0, 0)


def test_decision_from_the_future() -> None:
    a = offer("aws", "p4d.24xlarge")
    r, ex = real_runner(market(a))
    recs = r.handle(decision("future", [(ChangeAction.LAUNCH, None, a, 1)], at=NOW + timedelta(days=3650)))
    assert refused(recs, "decision from the future") and ex.launched == []
    dry = ExecutorRunner(prices=market(a), clock=Clock())  # dry run refuses it too
    assert refused(dry.handle(decision("future", [(ChangeAction.LAUNCH, None, a, 1)],
                                       at=NOW + timedelta(days=3650))), "future")
    # within the clock skew: fine
    recs = r.handle(decision("skew", [(ChangeAction.LAUNCH, None, a, 1)], at=NOW + timedelta(seconds=30)))
    assert [x.status for x in recs] == ["done"]


def test_stale_decision() -> None:
    """A fresh consumer group replays old decisions: the real executor must not act on them."""
    a = offer("aws", "p4d.24xlarge")
    r, ex = real_runner(market(a))
    r.handle(decision("up", [(ChangeAction.LAUNCH, None, a, 1)], at=NOW))
    old = NOW - timedelta(hours=2)
    recs = r.handle(decision("old", [(ChangeAction.MIGRATE, a, offer("aws", "g5.xlarge"), 1)], at=old))
    assert refused(recs, "stale decision (7200s old > 900s)")
    assert ex.launched == [(a.key, 1)] and ex.terminated == []
    # dry run still records the intent of history (replays into executor_actions)
    dry = ExecutorRunner(prices=market(a), clock=Clock())
    assert dry.handle(decision("old", [(ChangeAction.LAUNCH, None, a, 1)], at=old))[0].status == "planned"


def test_unknown_market_price() -> None:
    a, b = offer("aws", "p4d.24xlarge"), offer("aws", "unlisted")
    r, ex = real_runner(market(a))
    recs = r.handle(decision("d", [(ChangeAction.LAUNCH, None, b, 1)], per=0.5, at=NOW))
    assert refused(recs, "no known market price") and ex.launched == [] and recs[0].usd_per_hour == 0
    dry = ExecutorRunner(clock=Clock())  # no price source at all: nothing is priced at $0
    assert refused(dry.handle(decision("d", [(ChangeAction.LAUNCH, None, a, 1)], at=NOW)), "no known market price")
    assert dry.running() == (0, 0)


def test_refusals_recorded_in_clickhouse_and_prices_from_offer_latest(chdb_client: tuple[Any, str]) -> None:
    from outputs.sink import ClickHouseWriter

    client, db = chdb_client
    a, b = offer("aws", "p4d.24xlarge"), offer("aws", "unlisted")
    ClickHouseWriter(client, db).write([
        PriceObserved(event_id=f"p{i}", offer=a, usd_per_hour=usd, quoted_at=NOW + timedelta(minutes=i),
                      observed_at=NOW, source="test") for i, usd in enumerate((3.0, 7.5))])
    assert ClickHouseLatestPrices(client, db).latest({a.key, b.key}) == {a.key: 7.5}
    r = ExecutorRunner(client=client, db=db, caps=Caps(max_usd_per_hour=20), clock=Clock())
    assert r.handle(decision("ok", [(ChangeAction.LAUNCH, None, a, 2)], per=1.0, at=NOW))[0].status == "planned"
    assert r.running() == (2, pytest.approx(15.0))  # booked at the latest market price, not the decision's
    r.handle(decision("over", [(ChangeAction.LAUNCH, None, a, 1)], wid="w2", at=NOW))
    r.handle(decision("unpriced", [(ChangeAction.LAUNCH, None, b, 1)], wid="w3", at=NOW))
    r.handle(AllocationDecided(event_id="future", decided_at=NOW + timedelta(days=1), workload_ids=["w4"],
                               assignments=[], reason="test"))
    rows = dict(client.query(f"SELECT decision_id, detail FROM {db}.executor_actions FINAL "
                             "WHERE status = 'refused'").result_rows)
    assert set(rows) == {"over", "unpriced", "future"}
    assert "$22.50/h" in rows["over"] and "no known market price" in rows["unpriced"] and "future" in rows["future"]
    r2 = ExecutorRunner(client=client, db=db, clock=Clock())  # refused decisions stay handled after a restart
    assert r2.handle(decision("over", [(ChangeAction.LAUNCH, None, a, 1)], wid="w2", at=NOW)) == []
    assert r2.launches.counts(NOW)[0] == 2 and r2.running()[0] == 2  # churn window restored too


def test_market_prices_from_events() -> None:
    a = offer("aws", "p4d.24xlarge")
    m = MarketPrices()
    r = ExecutorRunner(prices=m, clock=Clock())
    ev = [PriceObserved(event_id=f"p{i}", offer=a, usd_per_hour=usd, quoted_at=NOW + timedelta(minutes=m_),
                        observed_at=NOW, source="test") for i, (usd, m_) in enumerate(((4.0, 5), (1.0, 1)))]
    r.handle_events([*ev, decision("d", [(ChangeAction.LAUNCH, None, a, 1)], per=0.5, at=NOW)])
    assert m.latest([a.key]) == {a.key: 4.0}  # the late, older quote does not win
    assert r.records[0].status == "planned" and r.records[0].usd_per_hour == 4.0


def test_caps_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDARB_EXEC_MAX_LAUNCHES_PER_HOUR", "5")
    monkeypatch.setenv("CLOUDARB_EXEC_MAX_CLOCK_SKEW_S", "10")
    c = Caps(max_instances=3)
    assert (c.max_instances, c.max_launches_per_hour, c.max_clock_skew_s, c.max_usd_per_hour) == (3, 5, 10.0, 200.0)
    monkeypatch.setenv("CLOUDARB_EXEC_MAX_INSTANCES", "-1")
    with pytest.raises(ValueError):
        Caps()


# -- Kafka: security passthrough for the decisions consumer

def test_kafka_security_passthrough() -> None:
    assert kafka_security_config({}) == {}
    env = {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KAFKA_SASL_USERNAME": "executors", "KAFKA_SASL_PASSWORD": "s3cret", "KAFKA_SSL_CA_LOCATION": "/ca.pem"}
    conf = kafka_security_config(env)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "executors" and conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == "/ca.pem"
    for bad in ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
                {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "s3cret"}):
        with pytest.raises(ValueError) as exc:
            kafka_security_config(bad)
        assert "s3cret" not in str(exc.value)


