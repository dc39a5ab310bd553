"""Metric families more than one process exposes, defined once: the dashboards (infra/grafana) read them by
name and labels, so their shape is a contract, as a topic's schema is.

>>> f = consumer_lag_family({("cloudarb-market", "prices.v1", 0): 3})
>>> f.name, [(s.labels["partition"], s.value) for s in f.samples]
('cloudarb_consumer_lag', [('0', 3.0)])
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import GaugeMetricFamily


def consumer_lag_family(lags: Mapping[tuple[str, str, int], int]) -> GaugeMetricFamily:
    """cloudarb_consumer_lag{group,topic,partition} from {(group, topic, partition): lag} (the worker exposes its
    market stage's, the outputs process its consumer groups')."""
    g = GaugeMetricFamily("cloudarb_consumer_lag", "messages between the consumer group's position (or committed "
                          "offset) and the partition's high watermark", labels=["group", "topic", "partition"])
    for (group, topic, p), lag in sorted(lags.items()):
        g.add_metric([group, topic, str(p)], float(lag))
    return g
