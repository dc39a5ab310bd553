"""What users touch: the ClickHouse sink and analytics (`sink`, `rows`, `clickhouse`), the query API and
dashboard (`api`, `queries`, `static/`), alert rules and signed webhooks (`alerts`), deployment executors
(`executors`), and how they run (`server`). Reads Kafka topics and ClickHouse, never a worker's memory.
Imports only `schemas` among our packages (Kafka publishing is injected by `cloudarb`)."""
