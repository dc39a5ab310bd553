"""The broker helper fails with one clear line on problems a user can fix."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from cloudarb import signals
from cloudarb.cli import main
from embedded import kafka as kafka_local
from embedded.children import die_with_parent
from embedded.kafka import KafkaSetupError, LocalKafka, kafka_version


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


def test_a_broker_interrupted_while_starting_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C or SIGTERM during the readiness wait leaves no broker process behind."""
    fake = tmp_path / "java"
    fake.write_text('#!/bin/sh\ncase "$*" in *StorageTool*) exit 0;; esac\nexec sleep 300\n')
    fake.chmod(0o755)
    monkeypatch.setattr(LocalKafka, "_java", lambda self: str(fake))
    monkeypatch.setattr(kafka_local, "fetch_jars", lambda cache: tmp_path)

    def interrupted(self: LocalKafka, timeout_s: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalKafka, "wait_ready", interrupted)
    broker = LocalKafka(tmp_path / "k")
    with pytest.raises(KeyboardInterrupt):
        broker.start()
    assert broker.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "k" / "broker.pid").read_text()), 0)


def test_sigterm_raises_keyboard_interrupt_once() -> None:
    """The first SIGTERM becomes Ctrl-C; a second one, during the clean-up, is ignored."""
    signals._terminated.clear()
    try:
        with signals.sigterm_as_interrupt():
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler runs at the next bytecode boundary
            assert signals.terminated() and signals.interrupted_exit_code() == 143
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: the clean-up goes on
            time.sleep(0.05)
    finally:
        signals._terminated.clear()
    assert signals.interrupted_exit_code() == 130


def test_sigterm_sets_an_event() -> None:
    stop = threading.Event()
    try:
        with signals.sigterm_sets(stop):
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
    finally:
        signals._terminated.clear()


def test_die_with_parent_only_from_the_main_thread() -> None:
    cmd = ["java", "-version"]
    wrapped = die_with_parent(cmd)
    assert wrapped == cmd or (wrapped[-3:] == ["--", *cmd] and "--pdeathsig=TERM" in wrapped)
    from_thread: list[list[str]] = []
    t = threading.Thread(target=lambda: from_thread.append(die_with_parent(cmd)))
    t.start()
    t.join()
    assert from_thread == [cmd]  # the kernel would signal when that thread ends, not the process
