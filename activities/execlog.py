"""Append-only audit of stage executions (start/end per attempt), shared by worker processes.

Operators read it to see what ran where; the resume and chaos tests count it to prove that no
finished stage ran twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path


class ExecutionLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def record(
        self,
        campaign: str,
        cell: str,
        stage: str,
        attempt: int,
        event: str,
        **extra: object,
    ) -> None:
        line = json.dumps(
            {
                "t": time.time(),
                "pid": os.getpid(),
                "campaign": campaign,
                "cell": cell,
                "stage": stage,
                "attempt": attempt,
                "event": event,
                **extra,
            }
        )
        with open(self.path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
