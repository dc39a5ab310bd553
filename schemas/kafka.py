"""Kafka client security settings from the environment, for every Kafka client of every package.

librdkafka reads no environment itself, so each client passes these through (`client_config`); the decision
stage's Faust app gets the same settings as Faust credentials (streams.runtime.app). Variables:

    KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL  -> security.protocol
    KAFKA_SASL_MECHANISM      PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | ...           -> sasl.mechanism
    KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD                                       -> sasl.username / .password
    KAFKA_SSL_CA_LOCATION, KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION, KAFKA_SSL_KEY_PASSWORD

The password is never logged and never part of an error message.

>>> client_config("b:9092", {"KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": "PLAIN",
...                         "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, **{"log_level": 3})
{'bootstrap.servers': 'b:9092', 'security.protocol': 'SASL_PLAINTEXT', 'sasl.mechanism': 'PLAIN', \
'sasl.username': 'u', 'sasl.password': 'p', 'log_level': 3}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

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


def client_config(bootstrap: str, env: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka client's configuration: the bootstrap servers, the security settings, then `extra`."""
    return {"bootstrap.servers": bootstrap, **kafka_security_config(env), **extra}
