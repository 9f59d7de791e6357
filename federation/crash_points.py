"""Named points where a crash test kills the coordinator, so that resume is tested where it is hardest.

`SILOBRIDGE_CRASH_AT=<point>` in the coordinator's environment makes the process SIGKILL its own process
group (itself, its Ray workers) when it reaches that point, as an OOM kill or a reboot would: no handler
runs, nothing is flushed. Points: `unmask:round N` (a round's secure sum has the firms' masked inputs,
not yet unmasked), `pending:N` (round N's models are on disk, its ledger entries not yet written) and
`entry:N` (round N's first ledger entry is written, the round's checkpoint not yet); the linear family's
releases and a query session's steps have the same two, named by release id (`pending:linear/demand`,
`entry:query-2/kmeans/step-1`). Unset, nothing happens. `SILOBRIDGE_CRASH_SCOPE=process` kills only the
process that reaches the point: a networked ServerApp shares its process group with the SuperLink's SuperExec
that started it (seen in flwr 1.41), and the test is of the coordinator's app dying, not of the SuperExec.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "SILOBRIDGE_CRASH_AT"
CRASH_SCOPE = "SILOBRIDGE_CRASH_SCOPE"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_AT) == name:
        if os.environ.get(CRASH_SCOPE) == "process":
            os.kill(os.getpid(), signal.SIGKILL)
        os.killpg(os.getpgrp(), signal.SIGKILL)
