"""The broker helper fails with one clear line on problems a user can fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cloudarb import kafka_local
from cloudarb.cli import main
from cloudarb.kafka_local import KafkaSetupError, LocalKafka, kafka_version


def test_version_is_pinned() -> None:
    assert kafka_version().startswith("4.")


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(KafkaSetupError, match=f"port {port} is in use") as exc:
            LocalKafka(tmp_path, port=port)._ports()
        assert "\n" not in str(exc.value)


def test_missing_java_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(kafka_local.shutil, "which", lambda cmd: None)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("CLOUDARB_HOME", str(tmp_path))
    assert main(["kafka", "start", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cloudarb: `java` not found") and "install Java 17" in err and "\n" not in err


def test_broker_that_dies_at_start_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = LocalKafka(tmp_path)

    class Dead:
        returncode = 1
        pid = -1

        def poll(self) -> int:
            return 1

    broker.proc = Dead()  # type: ignore[assignment]
    broker.port = 1
    with pytest.raises(KafkaSetupError, match="exited with code 1"):
        broker.wait_ready(5)


def test_worker_without_a_broker_says_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["worker"]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in capsys.readouterr().err


def test_cluster_ids_that_look_like_options_still_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A random KRaft id can start with '-' (base64url): formatting must not read it as an option."""
    monkeypatch.setattr(kafka_local, "_kraft_uuid", lambda: "-AbCdEfGhIjKlMnOpQrStU")
    broker = LocalKafka(tmp_path / "k")
    try:
        broker.start()
        assert (tmp_path / "k" / "log" / "meta.properties").exists()
    finally:
        broker.stop()
