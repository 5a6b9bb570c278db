"""Runs whose worker process died: record each run's worker, and fail the runs whose worker is gone.

A SIGKILLed run worker (the daemon's, `dagster asset materialize`, `batch-predict materialize`)
cannot report its own end, so its run stays STARTED and keeps a slot of
`max_concurrent_runs`. Each run of this code location records the host, PID and process start
time of its worker as tags, with the run's own id (a retry inherits its parent's tags); `sweep_dead_runs`
then marks an in-flight run of this host failed when that process no longer exists, so run retries
relaunch it and the slot is free. A run `batch-predict` executes in-process has the tags from its
creation, so one killed before it started is found too. A run killed before its resources started
has no tags of its own; on an instance whose runs are stored on this machine, its worker is the
process that emitted its RUN_START event.
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
# The run the tags were recorded for: a retry inherits its parent's tags (Dagster copies them), which
# name the parent's worker, not its own, until its own worker records them.
RUN_TAG = "batch_predict/worker_run"

_IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# A run that `batch-predict` creates in-process carries its worker tags from its creation, so a kill
# before its RUN_START leaves it NOT_STARTED with the tags of a process that is gone (the daemon's
# runs are queued when created, and tagged only once their worker starts).
_SWEPT = [dg.DagsterRunStatus.NOT_STARTED, *_IN_FLIGHT]
_NOT_YET_TAGGED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


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


def worker_tags(run_id: str, pid: int | None = None) -> dict[str, str]:
    """The tags that identify the process running run `run_id`: this process unless `pid` is given."""
    pid = os.getpid() if pid is None else pid
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_START_TAG: process_start_time(pid) or "",
        RUN_TAG: run_id,
    }


def own_worker_tags(run: dg.DagsterRun) -> bool:
    """Whether the run's worker tags were recorded for it, not inherited from the run it retries or
    re-executes. Tags of an earlier release have no RUN_TAG: they count as the run's own unless the run
    has a parent, whose tags they may be."""
    retried = run.parent_run_id or run.tags.get("dagster/parent_run_id")
    recorded_for = run.tags.get(RUN_TAG, None if retried else run.run_id)
    return PID_TAG in run.tags and recorded_for == run.run_id


def record_worker(instance: dg.DagsterInstance | None, run_id: str | None) -> None:
    """Tag the run with the process executing it (called in the run worker as its resources start)."""
    if instance is None or run_id is None:
        return
    run = instance.get_run_by_id(run_id)
    mine = worker_tags(run_id)
    if run is not None and {key: run.tags.get(key) for key in mine} != mine:
        instance.add_run_tags(run_id, mine)


def worker_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the worker recorded in a run's tags still runs: None if it ran on another host or is unknown."""
    if tags.get(HOST_TAG) != socket.gethostname() or not str(tags.get(PID_TAG, "")).isdigit():
        return None
    started = process_start_time(int(tags[PID_TAG]))
    return started is not None and started == tags.get(PID_START_TAG, started)


def run_storage_is_local(instance: dg.DagsterInstance) -> bool:
    """Whether the instance keeps its runs on this machine (SQLite files, or in memory), so that all its runs ran here."""
    from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage | InMemoryRunStorage)


def run_start_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The PID of the process that emitted the run's RUN_START event, or None if the run has not started.

    That process orchestrates the run: the process of `dagster asset materialize` or
    `execute_in_process`, or the run worker the daemon's run launcher started.
    """
    connection = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1, ascending=False)
    event = connection.records[0].event_log_entry.dagster_event if connection.records else None
    return event.pid if event is not None else None


@dataclass(frozen=True)
class SweptRun:
    run_id: str
    job_name: str
    status: str
    pid: str


def sweep_dead_runs(instance: dg.DagsterInstance) -> list[SweptRun]:
    """Fail the in-flight runs of this host whose recorded worker process is gone.

    A NOT_STARTED, STARTING or STARTED run is reported failed (run retries relaunch the runs the daemon
    launched); a CANCELING one is reported canceled, as was asked. Runs of other hosts are left
    alone (run monitoring covers the daemon's). A STARTING or STARTED run without a worker recorded
    for it (killed before its resources started, or a retry whose tags still name its parent's
    worker) is judged by the process that emitted its RUN_START event, but only when the instance's
    runs are stored on this machine: elsewhere a bare PID may be another host's, and such runs are
    left alone. A process with that PID counts as its worker (there is no start time to tell a
    reused PID); a run with no RUN_START event yet is left to run monitoring's start timeout.
    """
    swept = []
    host = socket.gethostname()
    local = run_storage_is_local(instance)
    records = list(instance.get_run_records(filters=dg.RunsFilter(statuses=_SWEPT, tags={HOST_TAG: host})))
    if local:
        records += [
            record
            for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_NOT_YET_TAGGED))
            if PID_TAG not in record.dagster_run.tags
        ]
    for record in records:
        run = record.dagster_run
        if own_worker_tags(run):
            if worker_alive(run.tags) is not False:
                continue
            pid, identified = run.tags[PID_TAG], ""
        elif run.status not in _NOT_YET_TAGGED or not local:
            continue  # nothing here tells which process runs it
        else:
            start_pid = run_start_pid(instance, run.run_id)
            if start_pid is None or process_start_time(start_pid) is not None:
                continue
            pid = str(start_pid)
            identified = " It was identified by the run's RUN_START event: it died before recording its worker tags."
        # Another sweep (the sensor and a CLI verb) may have got there first.
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in _SWEPT:
            continue
        when = (
            "before the run started, so it could not"
            if current.status == dg.DagsterRunStatus.NOT_STARTED
            else "before it could"
        )
        message = (
            f"The process that ran this run (PID {pid} on {run.tags.get(HOST_TAG, host)}) is gone: it was killed or "
            f"crashed {when} record the run's end." + identified
        )
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message=message + " It was being canceled; marked canceled.")
        else:
            instance.report_run_failed(current, message=message + " Marked failed so that it can be retried.")
        swept.append(SweptRun(run.run_id, run.job_name, current.status.value, pid))
    return swept
