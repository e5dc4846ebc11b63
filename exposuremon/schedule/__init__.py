"""When scans run: sentinel sweeps, quick and full jobs, reboot follow-ups, late scans.

`SentinelSweeper` runs every target's sentinel scan on its interval, many per tick;
`ScanScheduler` keeps APScheduler 3 jobs for quick and full scans, reboot follow-ups and
upkeep; `LateScans` tallies scans that did not run on time; `maintenance` says when targets
are in a maintenance window and what the summary at its end says. The decisions (first runs after
a start, due times, follow-ups, lateness) are pure functions and plans; its modules are
private.
"""

from __future__ import annotations

from exposuremon.schedule.jobs import (
    FIRST_RUN_WINDOW,
    REBOOT_FOLLOW_UPS,
    JobSpec,
    ScanScheduler,
    first_run,
    follow_ups,
    kind_of_job,
)
from exposuremon.schedule.lateness import LATE_AFTER, LateScans, LateSummary, is_late
from exposuremon.schedule.maintenance import (
    ActiveMemo,
    MaintenanceWindow,
    OneOff,
    Recurring,
    Showing,
    Summary,
    Transitions,
    active_span,
    ad_hoc_times,
    covering,
    ended_event,
    next_start,
    occurrences,
    parse_cron,
    parse_zone,
    showing,
    started_event,
    summarise,
    transitions,
)
from exposuremon.schedule.sweep import (
    BEHIND_AFTER,
    CAUGHT_UP_POLL,
    SentinelSweeper,
    SweepPlan,
    SweepSpec,
)

__all__ = [
    "BEHIND_AFTER",
    "CAUGHT_UP_POLL",
    "FIRST_RUN_WINDOW",
    "LATE_AFTER",
    "REBOOT_FOLLOW_UPS",
    "ActiveMemo",
    "JobSpec",
    "LateScans",
    "LateSummary",
    "MaintenanceWindow",
    "OneOff",
    "Recurring",
    "ScanScheduler",
    "SentinelSweeper",
    "Showing",
    "Summary",
    "SweepPlan",
    "SweepSpec",
    "Transitions",
    "active_span",
    "ad_hoc_times",
    "covering",
    "ended_event",
    "first_run",
    "follow_ups",
    "is_late",
    "kind_of_job",
    "next_start",
    "occurrences",
    "parse_cron",
    "parse_zone",
    "showing",
    "started_event",
    "summarise",
    "transitions",
]
