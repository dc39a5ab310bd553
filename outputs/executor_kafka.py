"""Kafka security for the output consumers (sink, alerts, executors) and the decisions topic's ACLs.

Broker ACLs. The decisions topic is an instruction to spend money, so on a shared cluster only the
decision worker may write it and the executors may only read it, e.g. (principals are examples; the
group is `<CLOUDARB_APP_ID>-executors`):

    kafka-acls --bootstrap-server $B --add --allow-principal User:cloudarb-worker \\
        --operation Write --operation Describe --topic cloudarb.decisions.v1
    kafka-acls --bootstrap-server $B --add --allow-principal User:cloudarb-executors \\
        --operation Read --operation Describe --topic cloudarb.decisions.v1
    kafka-acls --bootstrap-server $B --add --allow-principal User:cloudarb-executors \\
        --operation Read --group cloudarb-executors

(no other principal gets Write on the topic). The executors still trust nothing in a decision
(`outputs/executor_guard.py`): ACLs keep strangers out, the guard bounds what a bad decision can do.

Security settings (librdkafka reads no environment itself, so they are passed through explicitly):

    KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL  -> security.protocol
    KAFKA_SASL_MECHANISM      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | ...           -> sasl.mechanism
    KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD                                       -> sasl.username / .password
    KAFKA_SSL_CA_LOCATION, KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION, KAFKA_SSL_KEY_PASSWORD

The password is never logged and never part of an error message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}


def kafka_security_config(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka security settings from `KAFKA_*` variables (default: the process environment).

    Raises ValueError (naming the variable, never its value) on an unknown protocol or half a login."""
    env = os.environ if env is None else env
    conf = {key: env[var].strip() for var, key in SECURITY_ENV.items() if env.get(var, "").strip()}
    proto = conf.get("security.protocol", "PLAINTEXT").upper()
    if proto not in PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {sorted(PROTOCOLS)}")
    if "security.protocol" in conf:
        conf["security.protocol"] = proto
    if ("sasl.username" in conf) != ("sasl.password" in conf):
        raise ValueError("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD must be set together")
    if "sasl.username" in conf and not proto.startswith("SASL_"):
        raise ValueError("KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL is not SASL_SSL/SASL_PLAINTEXT")
    return conf
