"""Executors: dry run by default, opt-in real executors (AWS on moto, Lambda and RunPod on HTTP
doubles), caps, idempotence on decision id (also across restarts), and records in ClickHouse."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from outputs.executors import (
    AwsExecutor,
    Caps,
    ExecutorRunner,
    LambdaExecutor,
    RunPodExecutor,
    executors_from_env,
)
from schemas.events import AllocationDecided, Assignment, ChangeAction, PlanChange
from schemas.offers import Market, OfferKey

T = datetime.now(UTC)


def offer(provider: str, it: str, market: Market = Market.ON_DEMAND, region: str = "us-east-1") -> OfferKey:
    return OfferKey(provider=provider, region=region, instance_type=it, gpu_model="A100-80GB", gpus_per_instance=1,
                    market=market)


def decision(did: str, changes: list[tuple[ChangeAction, OfferKey | None, OfferKey | None, int]],
             wid: str = "w") -> AllocationDecided:
    assigns = [Assignment(workload_id=wid, offer=to, instances=n, usd_per_hour=2.0 * n)
               for _, _, to, n in changes if to is not None]
    return AllocationDecided(event_id=did, decided_at=T, workload_ids=[wid], assignments=assigns, reason="test",
                             changes=[PlanChange(action=a, workload_id=wid, from_offer=f, to_offer=to, instances=n)
                                      for a, f, to, n in changes])


def test_dry_run_default_recorded_and_idempotent(chdb_client: tuple[Any, str]) -> None:
    client, db = chdb_client
    a, b = offer("aws", "p4d.24xlarge"), offer("aws", "p5.48xlarge", Market.SPOT)
    # an AWS executor is configured but aws is not enabled: dry run only
    r = ExecutorRunner({"aws": AwsExecutor(image_id="ami-x")}, enabled=(), client=client, db=db)
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


def test_caps() -> None:
    a = offer("aws", "p4d.24xlarge")
    r = ExecutorRunner(caps=Caps(max_instances=3, max_usd_per_hour=100))
    assert r.handle(decision("d1", [(ChangeAction.LAUNCH, None, a, 2)]))[0].status == "planned"
    rec = r.handle(decision("d2", [(ChangeAction.LAUNCH, None, a, 2)], wid="w2"))[0]
    assert rec.status == "skipped" and "max 3" in rec.detail
    r = ExecutorRunner(caps=Caps(max_instances=100, max_usd_per_hour=3.0))
    rec = r.handle(decision("d3", [(ChangeAction.LAUNCH, None, a, 2)]))[0]  # 2 x $2/h > $3/h
    assert rec.status == "skipped" and "$4.00/h" in rec.detail


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
        r = ExecutorRunner({"aws": AwsExecutor(image_id=ami)}, enabled={"aws"}, caps=Caps(max_instances=10))
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

        bad = ExecutorRunner({"aws": Refusing(image_id=ami)}, enabled={"aws"})
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
                       enabled={"lambda", "runpod"})
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


def test_real_executor_ignores_stale_decisions() -> None:
    """A fresh consumer group replays old decisions: the real executor must not launch for them."""
    from datetime import timedelta

    class Boom:
        name = "boom"

        def launch(self, *a: Any) -> list[str]:
            raise AssertionError("must not be called")

        def terminate(self, *a: Any) -> None:
            raise AssertionError("must not be called")

    a = offer("aws", "p4d.24xlarge")
    old = decision("old", [(ChangeAction.LAUNCH, None, a, 1)]).model_copy(
        update={"decided_at": T - timedelta(hours=2)})
    r = ExecutorRunner({"aws": Boom()}, enabled={"aws"})  # type: ignore[dict-item]
    rec = r.handle(old)[0]
    assert rec.status == "skipped" and "stale decision" in rec.detail
    assert ExecutorRunner().handle(old)[0].status == "planned"  # dry run still records the intent


def test_executors_from_env() -> None:
    ex, enabled = executors_from_env({"RUNPOD_API_KEY": "k"})
    assert ex == {} and enabled == set()  # no opt-in, no executor
    ex, enabled = executors_from_env({"CLOUDARB_EXECUTE": "runpod,aws", "RUNPOD_API_KEY": "k",
                                      "CLOUDARB_AWS_IMAGE_ID": "ami-1"})
    assert set(ex) == {"runpod", "aws"} and enabled == {"runpod", "aws"}
