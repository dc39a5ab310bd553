"""Child processes that die with their parent: the local Kafka broker and the demo's worker.

`die_with_parent(cmd)` prefixes a command line so that, on Linux, the child gets SIGTERM when this process
dies, even by SIGKILL (`prctl(PR_SET_PDEATHSIG)` through util-linux's `setpriv`, which then execs the
command: the pid is the command's).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import threading


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in usage else None


def die_with_parent(cmd: list[str], sig: str = "TERM") -> list[str]:
    """`cmd`, prefixed so that its process gets `sig` when this one dies (Linux with util-linux >= 2.33).

    Unchanged elsewhere, and when called outside the main thread: the kernel sends the signal when the
    *thread* that started the child exits, which for a helper thread would be long before this process.
    """
    setpriv = _setpriv()
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return cmd
    return [setpriv, f"--pdeathsig={sig}", "--", *cmd]
