"""Runs a command as the child of a subreaper that reaps every orphan below it, then exits once
none is left.

Why: libvirtd daemonizes, and so do the QEMU processes it spawns (its capability probes and its
domains). Their orphans are re-parented to the nearest subreaper, else to PID 1. Where PID 1 is not
an init that reaps (containers, micro-VMs like this project's CI machines), an exited probe stays a
zombie, and libvirtd waits for it to vanish in virProcessKillPainfullyDelay: every domain define
then took 20 s to 2.5 min. Under this subreaper the orphans are reaped at once. A lab host's init
reaps on its own, so only the scripts that start libvirtd by hand use this.

Usage: subreaper.py PIDFILE COMMAND [ARG...]   (its own PID goes to PIDFILE)
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    pidfile, command = argv[1], argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"subreaper: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    subprocess.Popen(command)
    # Reap the command, the daemons it left behind and everything they orphan, until nothing is left.
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
