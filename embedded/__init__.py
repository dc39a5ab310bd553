"""The embedded default: what runs on a fresh machine with no Docker and no cluster.

- `kafka.py`: a real single-node KRaft Kafka broker on 127.0.0.1 from its pinned Maven Central jars
  (`cloudarb kafka start|fetch|wipe|topics`, the tests' session fixture, the benchmarks), or the cluster
  `KAFKA_BOOTSTRAP_SERVERS` names;
- `demo.py`: the whole pipeline on one machine (`cloudarb demo`, `make demo`): broker, worker process,
  ClickHouse sink on embedded chdb, API and dashboard, replay of the recorded market data, then a summary;
- `children.py`: child processes (the broker, the demo's worker) that die with the process that started them.

The CLI (`cloudarb/`) imports this package, never the reverse: what the demo needs from the settings
and the example files, the CLI passes in. Like `cloudarb/`, it wires components together; none of them
imports it (import-linter contracts in pyproject.toml).
"""
