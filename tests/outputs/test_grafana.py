"""Every Grafana panel's SQL, with the ClickHouse plugin's macros expanded, runs against chdb loaded
with replayed data: no error and no empty panel. Also checks the provisioning files fit together."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from outputs.executors import ExecutorRunner
from schemas.events import AllocationDecided, Event

GRAFANA = Path(__file__).resolve().parents[2] / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALL = "$__all"
PROMETHEUS_UID = "cloudarb-prometheus"


def _is_prometheus(panel: dict[str, Any]) -> bool:
    """A panel on the Prometheus datasource (PromQL, not SQL: checked by test_prometheus_panels_...)."""
    return bool(panel["datasource"]["type"] == "prometheus")


def _split_args(s: str, start: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose '(' is at `start`; returns (args, index after ')')."""
    depth, args, cur = 0, [], []
    i = start
    while i < len(s):
        c = s[i]
        if c == "(":
            depth += 1
            if depth > 1:
                cur.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
            cur.append(c)
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    raise ValueError(f"unbalanced macro call in {s[start:start + 80]!r}")


def _replace_macro(sql: str, name: str, fn: Any) -> str:
    pat = re.compile(re.escape(name) + r"\(")
    while (m := pat.search(sql)) is not None:
        args, end = _split_args(sql, m.end() - 1)
        sql = sql[:m.start()] + fn(*args) + sql[end:]
    return sql


def expand(sql: str, t_from: datetime, t_to: datetime, interval_s: int, variables: dict[str, Any]) -> str:
    """The grafana-clickhouse-datasource macros and Grafana template variables, as Grafana applies them."""
    f, t = int(t_from.timestamp()), int(t_to.timestamp())

    def var_value(ref: str) -> Any:
        return variables[ref.strip().lstrip("$").strip("{}").split(":")[0]]

    sql = _replace_macro(sql, "$__conditionalAll", lambda cond, ref: "1=1" if var_value(ref) == ALL else cond)

    def interp(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        v = variables[name]
        vals = v if isinstance(v, list) else [v]
        if fmt == "singlequote":
            return ",".join("'" + str(x).replace("'", "\\'") + "'" for x in vals)
        return ",".join(str(x) for x in vals)

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)", interp, sql)
    sql = _replace_macro(sql, "$__timeFilter_ms",
                         lambda c: f"{c} >= toDateTime64({f}, 3) AND {c} <= toDateTime64({t}, 3)")
    sql = _replace_macro(sql, "$__timeFilter", lambda c: f"{c} >= toDateTime({f}) AND {c} <= toDateTime({t})")
    sql = _replace_macro(sql, "$__timeInterval_ms",
                         lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {interval_s * 1000} millisecond)")
    sql = _replace_macro(sql, "$__timeInterval",
                         lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {interval_s} second)")
    sql = sql.replace("$__fromTime_ms", f"toDateTime64({f}, 3)").replace("$__toTime_ms", f"toDateTime64({t}, 3)")
    sql = sql.replace("$__fromTime", f"toDateTime({f})").replace("$__toTime", f"toDateTime({t})")
    sql = sql.replace("$__interval_s", str(interval_s))
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def test_expand_macros() -> None:
    a, b = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    sql = ("SELECT $__timeInterval(t) FROM ${database}.x WHERE $__timeFilter(t) AND "
           "$__conditionalAll(g IN (${gpu_model:singlequote}), $gpu_model)")
    out = expand(sql, a, b, 3600, {"database": "db", "gpu_model": ["L4", "A10"]})
    assert out == ("SELECT toStartOfInterval(toDateTime(t), INTERVAL 3600 second) FROM db.x WHERE "
                   "t >= toDateTime(1735689600) AND t <= toDateTime(1735776000) AND g IN ('L4','A10')")
    assert expand(sql, a, b, 60, {"database": "db", "gpu_model": ALL}).endswith("AND 1=1")


def test_provisioning_consistent() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())["datasources"][0]
    assert ds["type"] == "grafana-clickhouse-datasource"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cloudarb.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    titles = set()
    for f in DASHBOARDS:
        d = json.loads(f.read_text())
        titles.add(d["title"])
        for p in d["panels"]:
            want = PROMETHEUS_UID if _is_prometheus(p) else ds["uid"]
            assert p["datasource"]["uid"] == want
            assert all(t["datasource"]["uid"] == want for t in p["targets"])
    assert len(titles) == 6
    prom = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
    if prom.exists():  # provisioned beside ClickHouse: the Prometheus panels' datasource
        uids = {d["uid"]: d["type"] for d in yaml.safe_load(prom.read_text())["datasources"]}
        assert uids.get(PROMETHEUS_UID) == "prometheus"
    compose = GRAFANA.parents[1] / "docker-compose.yml"
    if compose.exists():  # the provider reads where docker-compose mounts the dashboards
        vols = yaml.safe_load(compose.read_text())["services"]["grafana"]["volumes"]
        mounts = {v.split(":")[0].removeprefix("./"): v.split(":")[1] for v in vols}
        assert mounts["infra/grafana/dashboards"] == prov["providers"][0]["options"]["path"]
        assert mounts["infra/grafana/provisioning"] == "/etc/grafana/provisioning"


@pytest.fixture
def grafana_db(loaded_db: tuple[Any, str, list[Event]]) -> tuple[Any, str, list[Event]]:
    client, db, events = loaded_db
    runner = ExecutorRunner(client=client, db=db)  # dry run: what the executors would have recorded
    for e in events:
        if isinstance(e, AllocationDecided):
            runner.handle(e)
    return client, db, events


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_runs_and_is_not_empty(path: Path, grafana_db: tuple[Any, str, list[Event]]) -> None:
    client, db, _ = grafana_db
    d = json.loads(path.read_text())
    t_from = datetime(2025, 1, 1, tzinfo=UTC)
    t_to = datetime.now(UTC) + timedelta(hours=1)
    variables: dict[str, Any] = {"database": db, "gpu_model": ALL}
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            rows = client.query(expand(v["query"], t_from, t_to, 3600, variables)).result_rows
            assert rows, f"variable {v['name']} has no values"
    problems = []
    for p in d["panels"]:
        if _is_prometheus(p):   # PromQL: see test_prometheus_panels_name_registered_metrics
            continue
        for tgt in p["targets"]:
            for gpu in (ALL, ["H100-80GB", "A100-80GB"]):
                sql = expand(tgt["rawSql"], t_from, t_to, 6 * 3600, {**variables, "gpu_model": gpu})
                try:
                    rows = client.query(sql).result_rows
                except Exception as exc:
                    problems.append(f"{p['title']}: {str(exc).splitlines()[0][:300]}")
                    continue
                if not rows and gpu == ALL:
                    problems.append(f"{p['title']}: empty")
    assert not problems, "\n".join(problems)


def _registered_metric_names() -> set[str]:
    """Every sample name the processes' collectors (and the prometheus objects they serve) can expose."""
    from types import SimpleNamespace

    from connectors.runner import CircuitBreaker, RunnerCollector, SourceReport
    from outputs.metrics import FAMILIES, OutputsCollector
    from streams.core.forecast import SKIPPED
    from streams.runtime.app import Counters
    from streams.runtime.metrics import WorkerCollector

    runner: Any = SimpleNamespace(reports={"s": SourceReport("s", "aws")}, breakers={"s": CircuitBreaker()})
    collectors: list[Any] = [WorkerCollector(Counters()), OutputsCollector(lambda: dict.fromkeys(FAMILIES, 0.0)),
                             RunnerCollector(runner), SKIPPED]
    names: set[str] = set()
    for c in collectors:
        for fam in c.collect():
            names.add(fam.name)
            names.update(fam.name + sfx for sfx in ("_total", "_bucket", "_sum", "_count", "_created"))
    return names


def test_prometheus_panels_name_registered_metrics() -> None:
    registered = _registered_metric_names()
    prom = [p for f in DASHBOARDS for p in json.loads(f.read_text())["panels"] if _is_prometheus(p)]
    assert prom, "no Prometheus panel"
    problems = []
    for p in prom:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": PROMETHEUS_UID}
            assert "rawSql" not in t and t["expr"].count("(") == t["expr"].count(")"), t
            used = set(re.findall(r"\bcloudarb_[a-z0-9_]+", t["expr"]))
            if not used:
                problems.append(f"{p['title']}: {t['expr']} names no cloudarb metric")
            problems += [f"{p['title']}: {m} is not a registered metric" for m in sorted(used - registered)]
    assert not problems, "\n".join(problems)
