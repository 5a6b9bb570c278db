"""Runs whose worker process died: record each run's worker, and fail the runs whose worker is gone.

A SIGKILLed run worker (the daemon's, `dagster asset materialize`, `batch-predict materialize`)
cannot report its own end, so its run stays STARTED and keeps a slot of
`max_concurrent_runs`. Each run of this code location records the host, PID and process start
time of its worker as tags; `sweep_dead_runs` then marks an in-flight run of this host failed
when that process no longer exists, so run retries relaunch it and the slot is free.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

HOST_TAG = "batch_predict/worker_host"
PID_TAG = "batch_predict/worker_pid"
# The kernel's start time of the process (clock ticks since boot): a PID reused by another
# process after the worker died has another start time, so it is not mistaken for the worker.
PID_START_TAG = "batch_predict/worker_started"

_IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def process_start_time(pid: int) -> str | None:
    """The start time of process `pid` from /proc/<pid>/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after its last ')'
    # start at field 3, so field 22 (starttime) is the 20th of them.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def worker_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that identify the process running a run: this process unless `pid` is given."""
    pid = os.getpid() if pid is None else pid
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start_time(pid) or ""}


def record_worker(instance: dg.DagsterInstance | None, run_id: str | None) -> None:
    """Tag the run with the process executing it (called in the run worker as its resources start)."""
    if instance is None or run_id is None:
        return
    run = instance.get_run_by_id(run_id)
    mine = worker_tags()
    if run is not None and {key: run.tags.get(key) for key in mine} != mine:
        instance.add_run_tags(run_id, mine)


def worker_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the worker recorded in a run's tags still runs: None if it ran on another host or is unknown."""
    if tags.get(HOST_TAG) != socket.gethostname() or not str(tags.get(PID_TAG, "")).isdigit():
        return None
    started = process_start_time(int(tags[PID_TAG]))
    return started is not None and started == tags.get(PID_START_TAG, started)


@dataclass(frozen=True)
class SweptRun:
    run_id: str
    job_name: str
    status: str
    pid: str


def sweep_dead_runs(instance: dg.DagsterInstance) -> list[SweptRun]:
    """Fail the in-flight runs of this host whose recorded worker process is gone.

    A STARTING or STARTED run is reported failed (run retries relaunch the runs the daemon
    launched); a CANCELING one is reported canceled, as was asked. Runs of other hosts, and
    runs without a recorded worker, are left alone (run monitoring covers the daemon's).
    """
    swept = []
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=_IN_FLIGHT, tags={HOST_TAG: socket.gethostname()})
    )
    for record in records:
        run = record.dagster_run
        if worker_alive(run.tags) is not False:
            continue
        pid = run.tags[PID_TAG]
        message = (
            f"The process that ran this run (PID {pid} on {run.tags[HOST_TAG]}) is gone: it was killed or "
            "crashed before it could record the run's end."
        )
        # Another sweep (the sensor and a CLI verb) may have got there first.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in _IN_FLIGHT:
            continue
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message=message + " It was being canceled; marked canceled.")
        else:
            instance.report_run_failed(current, message=message + " Marked failed so that it can be retried.")
        swept.append(SweptRun(run.run_id, run.job_name, current.status.value, pid))
    return swept
