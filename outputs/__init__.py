"""What users touch: the ClickHouse sink and store, (later) the query API, alerts and executors.
Reads Kafka topics and ClickHouse, never a worker's memory. Imports only `schemas` among our packages."""
