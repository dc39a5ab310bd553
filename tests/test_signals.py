"""SIGTERM is never lost: one that lands inside a callback whose exceptions Python drops is delivered again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, time, weakref
    from cloudarb import signals

    signals.install()

    class Thing:
        pass

    def callback(_ref):          # Python calls this from C and drops what it raises
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)          # the handler runs here, inside the callback

    thing = Thing()
    ref = weakref.ref(thing, callback)
    try:
        del thing
        time.sleep(3)
        print("still running")
    except KeyboardInterrupt:
        print("stopped", signals.interrupted_exit_code())
""")


def test_a_sigterm_dropped_inside_a_callback_still_stops_the_command() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "stopped 143", (out.stdout, out.stderr)
