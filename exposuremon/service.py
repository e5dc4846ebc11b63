"""The daemon: one object owns the lifecycle, store → scheduling → HTTP server → run → stop.

Signal handlers only set a flag or schedule work (`request_stop`, `request_reload`). Sentinel
scans are started by the sweeper when due (schedule/sweep.py), quick and full scans by
APScheduler jobs. Each scan claims its (target, kind), waits for a slot (the sweeper's for
sentinel scans; one of `max_concurrent_scans` for the others, which then also wait while
sentinel scans are behind), and runs the
scan pipeline (pipeline.py: scan → confirm → fingerprint → evaluate → apply or hold →
notify); a suspected reboot schedules follow-up scans. A scan that starts late, or not at
all, is counted and summed up in the log once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from exposuremon import acks
from exposuremon.config import Config, ConfigError, TargetConfig, load_config
from exposuremon.fleet import Held, LeaseKeeper, NodeIdentity, shard_of
from exposuremon.logs import get_logger
from exposuremon.metrics import Metrics, StateCollector, build_version
from exposuremon.model import Finding, ScanKind
from exposuremon.notify import Notifier, NullNotifier
from exposuremon.pipeline import ScanPipeline
from exposuremon.scan import ScanError, Scanner
from exposuremon.schedule import (
    ActiveMemo,
    JobSpec,
    LateScans,
    MaintenanceWindow,
    ScanScheduler,
    SentinelSweeper,
    SweepSpec,
    covering,
    ended_event,
    first_run,
    started_event,
    summarise,
    transitions,
)
from exposuremon.store import AdHocWindow, Store, StoreError
from exposuremon.systemd import SystemdNotifier, service_status
from exposuremon.units import utcnow
from exposuremon.web import HttpServer, make_app

STOP_GRACE = 5.0  # seconds running scans get to record their partial results on shutdown
QUIET_FLUSH = 60.0  # seconds between writes of quiet scans' times
NOTIFY_TIMEOUT = 10.0  # seconds per webhook request
STATUS_EVERY = 60.0  # seconds between STATUS= updates to systemd
LATE_SUMMARY_EVERY = 60.0  # seconds between log summaries of late scans
CHANGES_EVERY = 1.0  # seconds between looks for targets another process wrote (acks)
HEALTH_EVERY = 1.0  # seconds between looks at held silences (vantage health)
TAKEOVER_SPREAD = 5.0  # seconds over which the overdue sentinel scans of gained targets start
MAINTENANCE_EVERY = 1.0  # seconds between looks at maintenance windows (starts and ends)


def ad_hoc_window(stored: AdHocWindow) -> MaintenanceWindow:
    """A stored (API or CLI) window as the schedule knows windows: key `api/<id>`."""
    return MaintenanceWindow.ad_hoc(
        stored.id, stored.targets, stored.starts_at, stored.ends_at, stored.reason
    )


class StartError(RuntimeError):
    """The daemon cannot start: a config key names what to fix (one line, no traceback)."""


def shared_config_hash(config: Config) -> str:
    """A digest of what every node of a fleet must agree on: targets, schedule, scan tuning,
    policy and channels (not its own node name, listen address, state dir or store URL)."""
    shared = (config.scan, config.schedule, config.targets, config.notify)
    # repr, not a JSON dump: the models are frozen dataclass-like values whose repr lists
    # every field in order (secrets masked), and the same file gives the same repr anywhere.
    return hashlib.sha256(repr(shared).encode()).hexdigest()[:16]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.strerror}: {exc.filename}"
    return str(exc)


class Service:
    """Owns the store, scanner, scheduler and HTTP server of one daemon."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = config
        self.clock = clock
        self.config_path = config_path
        self.metrics = Metrics(registry)
        # Not in the registry: /metrics adds its families with a faster renderer (exposition.py).
        self.state_metrics = StateCollector(
            lambda since: self.store.gauges(since),
            lambda: self.config,
            lambda: self.pipeline.held(),
            owns=self.owns,
        )
        self.log = get_logger()
        self._store: Store | None = None
        self._scanner: Scanner | None = None
        self._http: HttpServer | None = None
        self._scheduler = ScanScheduler(self.scan_target, on_skipped=self._scan_skipped)
        self._sweeper = SentinelSweeper(self._sentinel_due)
        self._late = LateScans()
        self._pipeline: ScanPipeline | None = None
        # Fleet mode (a PostgreSQL store): the shard leases that say which targets are ours.
        self._leases: LeaseKeeper | None = None
        self._owned: frozenset[str] | None = None  # the targets scheduled here (fleet mode)
        self._reschedule_pending = False
        self._claimed: set[tuple[str, ScanKind]] = set()  # scans in progress, any stage
        # Scans asked for while the same scan was in progress, to run once it ends (the value:
        # on demand). The one in progress may have started before what they must see.
        self._again: dict[tuple[str, ScanKind], bool] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._stop_requested = asyncio.Event()
        self._slots = asyncio.Semaphore(config.scan.max_concurrent_scans)
        self._ready = False
        self._started = False  # start() completed: only then is there a run to report as stopped
        self.scans_recorded = 0
        self.systemd = SystemdNotifier.from_env()  # does nothing outside systemd
        self._reload_error: str | None = None  # why the last reload was refused
        self._targets: dict[str, TargetConfig] = {}  # by name, of `_targets_of`
        self._targets_of: Config | None = None
        # Chat delivery (notify/notifier.py): a real worker once the store is open.
        self.notifications: Notifier | NullNotifier = NullNotifier()
        self._session: aiohttp.ClientSession | None = None
        # Maintenance windows in force: the config's and the store's (ad-hoc) ones, as of the
        # last look (`maintenance_tick`); and the targets the metric shows in one.
        self._windows: tuple[MaintenanceWindow, ...] = config.maintenance_windows()
        self._in_maintenance: frozenset[str] = frozenset()
        self._maintenance_shown: frozenset[str] = frozenset()  # targets the gauge has
        self._maintenance_lock = asyncio.Lock()
        self._active = ActiveMemo()  # `holding` asks at every scan written

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (after start)."""
        if self._store is None:
            raise RuntimeError("service not started")
        return self._store

    @property
    def pipeline(self) -> ScanPipeline:
        """The scan pipeline (after start)."""
        if self._pipeline is None:
            raise RuntimeError("service not started")
        return self._pipeline

    @property
    def http_address(self) -> tuple[str, int] | None:
        """Where the HTTP server listens (after start)."""
        return None if self._http is None else self._http.bound

    async def start(self) -> None:
        """Open the store, start scanning and serving; ready when this returns."""
        # Pinging from the start: migrations may take long, and run in a thread.
        self.systemd.start_watchdog()
        self._store = await self._open_store()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=NOTIFY_TIMEOUT))
        self.notifications = Notifier(
            self._store,
            self.config.notify,
            self._session,
            self.metrics,
            public_url=self.config.http.public_url,
            clock=self.clock,
            node=self.config.fleet.node_name,  # whose claims on outbox messages are whose
        )
        self.notifications.start()  # delivers what an earlier run left in the outbox
        self._scanner = Scanner()
        if self._store.postgres:
            await self._join_fleet(self._store)
        leases = self._leases
        self._pipeline = ScanPipeline(
            config=lambda: self.config,
            store=self._store,
            scanner=self._scanner,
            notifier=self.notifications,
            metrics=self.metrics,
            clock=self.clock,
            stopping=self._stop_requested.is_set,
            fence_for=None if leases is None else leases.fence_for,
            reprobe=None if leases is None else self._request_reprobe,
            holding=self.holding,
            on_reboot=self._rebooted,
        )
        app = make_app(self.metrics.registry, self, state=self.state_metrics)
        self._http = HttpServer(app, self.config.http.host, self.config.http.port)
        try:
            await self._http.start()
        except OSError as exc:  # the port is taken, or the address is not this host's
            raise StartError(f"http.listen {self.config.http.listen}: {_reason(exc)}") from exc
        await self._pipeline.refresh_changed()  # the store's mark, before any state is held
        # Every target's state in one read, so that first scans after a restart start from
        # it (and are quiet when nothing changed) instead of a read each.
        await self._pipeline.preload([t.name for t in self.config.targets])
        last_scans = await self._store.last_scans()
        self._owned = self._owned_now()
        # Before the first scan: windows of the store, and ends missed while stopped.
        await self.maintenance_tick()
        jobs, sweeps = self._schedules(self.config, self._owned)
        self._sweeper.sync(sweeps, self._first_sentinels(last_scans))
        self._sweeper.start()
        self._scheduler.start()
        self._scheduler.sync(jobs, last_scans, self.clock())
        self._scheduler.add_maintenance(self.prune, interval=3600.0)
        self._scheduler.add_maintenance(self.flush_quiet, interval=QUIET_FLUSH)
        self._scheduler.add_maintenance(self.refresh_status, interval=STATUS_EVERY)
        self._scheduler.add_maintenance(self.report_late, interval=LATE_SUMMARY_EVERY)
        self._scheduler.add_maintenance(self.refresh_changed, interval=CHANGES_EVERY)
        self._scheduler.add_maintenance(self.maintenance_tick, interval=MAINTENANCE_EVERY)
        self._scheduler.add_maintenance(self.tick_health, interval=HEALTH_EVERY)
        self._ready = True
        self._started = True
        if self._leases is not None:
            # Lease changes while starting were not acted on: catch up with them once.
            self._shards_changed(self._leases.held)
        self.log.info(
            "started",
            targets=len(self.config.targets),
            listen=f"{self.config.http.host}:{self.config.http.port}",
            store=self._store.location,  # the SQLite file, or the URL without its password
        )
        self.systemd.ready()
        await self.refresh_status()

    async def _join_fleet(self, store: Store) -> None:
        """Fleet mode: take this node's share of the shard leases before scheduling anything."""
        fleet = self.config.fleet
        identity = NodeIdentity(
            fleet.node_name, fleet.vantage, build_version(), shared_config_hash(self.config)
        )
        self._leases = LeaseKeeper(
            store, identity, fleet.lease_ttl, on_change=self._shards_changed, metrics=self.metrics
        )
        try:
            await self._leases.start()
        except StoreError as exc:
            raise StartError(f"store: cannot join the fleet: {exc}") from exc
        self.log.info(
            "joined the fleet",
            node=identity.name,
            vantage=identity.vantage,
            shards=len(self._leases.held),
            of_shards=self._leases.shards,
        )

    def owns(self, target: str) -> bool:
        """Whether this node scans `target`: always on one node; in a fleet, while it holds
        the target's shard."""
        return self._leases is None or self._leases.owns(target)

    def _owned_now(self, config: Config | None = None) -> frozenset[str] | None:
        """The targets of `config` (the running one) whose shards this node holds; None: not
        a fleet, every target is this node's."""
        if self._leases is None:
            return None
        config = self.config if config is None else config
        return frozenset(t.name for t in config.targets if self._leases.owns(t.name))

    def _shards_changed(self, _held: Held) -> None:
        # Called by the lease keeper's task: the rescheduling itself awaits the store, so it
        # runs as a task of its own; changes that come while one is pending join it.
        if self._reschedule_pending or self._stop_requested.is_set() or not self._started:
            return
        self._reschedule_pending = True
        task = asyncio.get_running_loop().create_task(self._reschedule())
        self._jobs_add(task)

    async def _reschedule(self) -> None:
        """Schedule exactly the targets whose shards this node holds now (fleet mode)."""
        self._reschedule_pending = False
        owned = self._owned_now()
        before = self._owned or frozenset()
        if owned is None or owned == before:
            return
        self.pipeline.let_go(owned ^ before)
        last_scans: dict[tuple[str, ScanKind], dt.datetime] = {}
        if owned - before:
            # When the gained targets were scanned last (by their former owner), so that
            # their next scans come when due, not all at once. Without it (the database is
            # away) their first scans spread over their intervals.
            try:
                last_scans = await self.store.last_scans()
            except StoreError as exc:
                self.log.warning("could not read when gained targets were scanned", error=str(exc))
            owned = self._owned_now() or frozenset()  # leases may have changed meanwhile
        self._owned = owned
        jobs, sweeps = self._schedules(self.config, owned)
        self._scheduler.apply(self._scheduler.plan(jobs, last_scans, self.clock()))
        # Targets taken over from a node that died are overdue by up to lease_ttl already:
        # their sentinel scans come within seconds, not spread over a whole interval.
        self._sweeper.sync(sweeps, self._first_sentinels(last_scans, TAKEOVER_SPREAD))
        self.log.info(
            "targets rescheduled",
            targets=len(owned),
            gained=len(owned - before),
            lost=len(before - owned),
        )

    async def _open_store(self) -> Store:
        """Open `[store]`'s database, or SQLite under state_dir; StartError naming the key."""
        try:
            url = self.config.store.resolve_url()
        except ConfigError as exc:
            raise StartError("; ".join(exc.errors)) from None
        if url is None:
            state_dir = self.config.daemon.state_dir
            try:
                return await Store.open(state_dir, clock=self.clock)
            except (OSError, StoreError) as exc:
                raise StartError(f"daemon.state_dir {state_dir}: {_reason(exc)}") from exc
        try:
            return await Store.open(url, clock=self.clock)
        except (OSError, StoreError, ValueError) as exc:
            # StoreError names the database by its URL without the password; OSError (the
            # server unreachable) names an address at most.
            raise StartError(f"store: {_reason(exc)}") from exc

    async def run(self) -> None:
        """Serve until a stop is requested."""
        await self._stop_requested.wait()

    def request_stop(self) -> None:
        """Ask the service to stop (safe from a signal handler)."""
        self._stop_requested.set()

    def request_reload(self) -> None:
        """Ask the service to reload its config (safe from a signal handler)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._jobs_add(task)

    async def stop(self) -> None:
        """Stop scheduling, stop running scans (recorded incomplete), flush, close."""
        self.systemd.stopping()
        self._ready = False
        self._stop_requested.set()
        # Pause first, shut down last: APScheduler cancels jobs still running at shutdown,
        # and a stopped scan's job must live on to record its partial result.
        self._scheduler.pause()
        self._sweeper.pause()
        if self._pipeline is not None:
            self._pipeline.stop_running()
        pending = [t for t in self._jobs if t is not asyncio.current_task()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
        await self._scheduler.shutdown()
        await self._sweeper.stop()
        if self._pipeline is not None:
            try:
                await self.flush_quiet()
            except Exception:  # stopping must go on: only "last seen" times are at stake
                self.log.exception("could not write the times of quiet scans")
        if self._leases is not None:
            await self._leases.stop()  # hands the shards over: the others take them at once
        if self._http is not None:
            await self._http.stop()
        if self._scanner is not None:
            self._scanner.close()
        if self._store is not None:
            await self.notifications.stop()  # settles a delivery in flight, so before close
            await self._store.close()
        if self._session is not None:
            await self._session.close()
        if self._started:  # a failed start is reported once, by its StartError
            self.log.info("stopped", scans_recorded=self.scans_recorded)
        await self.systemd.stop_watchdog()  # last: a slow shutdown is still a live one

    def vantage_health(self) -> tuple[str, bool] | None:
        """This node's vantage and whether it judges it degraded (None before start).

        A degraded vantage keeps the node ready: it scans on and guards the targets from its
        own outage; `/readyz` says so in its detail, and `exposuremon_vantage_up` alerts."""
        if self._pipeline is None:
            return None
        return self.config.fleet.vantage, self._pipeline.vantage_degraded()

    def not_ready(self) -> str | None:
        """None when ready to serve, else why not (for /readyz)."""
        if not self._ready:
            return "starting" if not self._stop_requested.is_set() else "stopping"
        if not self._scheduler.running:
            return "scheduler not running"
        if not self._sweeper.running:
            return "sentinel sweeper not running"
        if self._leases is not None and not self._leases.healthy:
            return self._leases.reason
        return None

    async def refresh_status(self) -> None:
        """Tell systemd the one-line status: targets, open findings, last scan, reload error."""
        names = [t.name for t in self.config.targets]
        if self._owned is not None:
            names = [name for name in names if name in self._owned]
        seen = {} if self._pipeline is None else self._pipeline.seen
        halted = self._leases.reason if self._leases and not self._leases.healthy else None
        self.systemd.status(service_status(names, seen, self._reload_error, halted))

    async def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep the old one and say why."""
        if self.config_path is None:
            return False
        if not self._ready:  # starting or stopping: nothing to apply a config to
            self.log.warning("reload ignored while starting or stopping")
            return False
        self.systemd.reloading()
        try:
            return await self._reload(self.config_path)
        finally:
            # READY=1 after a refused config too: the service runs on, on the old one.
            self.systemd.ready()
            await self.refresh_status()

    async def _reload(self, path: Path) -> bool:
        # Everything the new config needs is built before any of it is adopted: a failure at
        # any step leaves the running config, its jobs, channels and limits as they were.
        try:
            new = load_config(path)
            for channel in new.notify:  # the URLs and secrets it would deliver with, read now
                channel.resolve_url()
                channel.resolve_secret()
            for target in new.targets:
                new.scan_for(target).scan_options()  # the engine's checks of its tuning
            slots = (
                self._slots
                if new.scan.max_concurrent_scans == self.config.scan.max_concurrent_scans
                else asyncio.Semaphore(new.scan.max_concurrent_scans)
            )
            last_scans = await self.store.last_scans()
            owned = self._owned_now(new)
            jobs, sweeps = self._schedules(new, owned)
            plan = self._scheduler.plan(jobs, last_scans, self.clock())
        except ConfigError as exc:
            return self._reload_rejected(exc.errors)
        except Exception as exc:  # anything else that cannot be built: say what, keep running
            return self._reload_rejected([f"{type(exc).__name__}: {exc}"])
        old_names = {t.name for t in self.config.targets}
        self.config = new
        self._owned = owned
        # A new limit applies to scans that start from now on; running ones keep their slot.
        self._slots = slots
        self.notifications.reconfigure(new.notify, new.http.public_url)
        self._scheduler.apply(plan)
        self._sweeper.sync(sweeps, self._first_sentinels(last_scans))
        names = {t.name for t in new.targets}
        if new.store != self.config.store or new.daemon.state_dir != self.config.daemon.state_dir:
            self.log.warning("store or state_dir changed: takes effect at the next restart")
        self.log.info(
            "reloaded",
            targets=len(names),
            added=sorted(names - old_names),
            removed=sorted(old_names - names),
        )
        self._reload_error = None
        self.metrics.reload_successful.set(1)
        return True

    def _reload_rejected(self, errors: list[str]) -> bool:
        self._reload_error = "; ".join(errors)
        self.log.error(
            "reload rejected, keeping the running config", reason=self._reload_error, errors=errors
        )
        self.metrics.reload_failures.inc()
        self.metrics.reload_successful.set(0)
        return False

    async def flush_quiet(self) -> None:
        """Write the times of quiet scans held since the last flush."""
        await self.pipeline.flush_quiet()

    async def prune(self) -> None:
        """Drop scans and events older than the retention."""
        cutoff = self.clock() - dt.timedelta(seconds=self.config.daemon.retention)
        counts = await self.store.prune(cutoff)
        if any(counts.values()):
            self.log.info("pruned", **counts)

    # -- maintenance windows (schedule/maintenance.py) ----------------------------------

    def holding(self, target: str) -> bool:
        """Whether `target` is in a maintenance window now: its notifications are held."""
        now = self.clock()
        return any(w.applies_to(target) and self._active.active(w, now) for w in self._windows)

    def maintenance_windows(self) -> tuple[MaintenanceWindow, ...]:
        """The windows in force as of the last look: the config's, then the store's."""
        return self._windows

    def maintenance_changed(self) -> None:
        """A window was added or ended (API): look now rather than at the next tick."""
        if self._started and not self._stop_requested.is_set():
            self._jobs_add(asyncio.get_running_loop().create_task(self.maintenance_tick()))

    async def maintenance_tick(self) -> None:
        """Start and end targets' maintenance as the windows say (events, summaries)."""
        try:
            async with self._maintenance_lock:  # a tick and an API poke do not overlap
                await self._maintenance_tick()
        except StoreError as exc:  # the next tick tries again; held rows stay held
            self.log.warning("could not look at maintenance windows", error=str(exc))

    async def _maintenance_tick(self) -> None:
        now = self.clock()
        stored = await self.store.maintenance_windows(ending_after=now)
        self._windows = self.config.maintenance_windows() + tuple(map(ad_hoc_window, stored))
        names = [t.name for t in self.config.targets if self.owns(t.name)]
        covered = covering(self._windows, names, now)
        self._show_maintenance(frozenset(covered), frozenset(names))
        recorded = await self.store.maintenance_open()
        plan = transitions(covered, {n: w for n, w in recorded.items() if self.owns(n)})
        if plan.starting:
            events = [started_event(n, key, now) for n, key in sorted(plan.starting.items())]
            saved = await self.store.start_maintenance(events)
            for event in saved:
                self.log.info(
                    "maintenance started", target=event.target, window=event.details.get("window")
                )
        for name in plan.ending:
            await self._end_maintenance(name, recorded.get(name))

    def _show_maintenance(self, covered: frozenset[str], names: frozenset[str]) -> None:
        """`exposuremon_maintenance{target}`: 1 in a window, 0 otherwise, for this node's
        targets; only what changed since the last look is written."""
        gauge = self.metrics.maintenance
        for name in self._maintenance_shown - names:
            gauge.remove(name)
        for name in names - self._maintenance_shown:
            gauge.labels(target=name).set(1 if name in covered else 0)
        kept = names & self._maintenance_shown
        for name in (covered ^ self._in_maintenance) & kept:
            gauge.labels(target=name).set(1 if name in covered else 0)
        self._in_maintenance, self._maintenance_shown = covered, names

    async def _end_maintenance(self, name: str, window: str | None) -> None:
        """One target's maintenance ended: its summary message, with what still holds."""
        # Under the target's lock: no scan holds a row after the summary took the others.
        async with self.pipeline.target_lock(name):
            held = await self.store.held_notifications(name)
            state = await self.store.load_state(name)
            events = list({h.event.id: h.event for h in held}.values())
            summary = summarise(events, state)
            send: dict[str, list[int]] = {}
            configured = {c.name for c in self.config.notify}
            for h in held:
                if h.channel not in configured:
                    continue  # a channel removed meanwhile: nothing would deliver it
                ids = send.setdefault(h.channel, [])
                if h.event.id in summary.page_events and h.event.id not in ids:
                    ids.append(h.event.id)
            ended = ended_event(name, window, self.clock(), summary)
            await self.store.finish_maintenance(ended, [h.id for h in held], send)
        if send:
            self.notifications.outbox_written(send)
        self.log.info(
            "maintenance ended",
            target=name,
            window=window,
            held=summary.held,
            still_open=list(summary.still_open),
            came_and_went=list(summary.came_and_went),
        )

    # -- scanning --------------------------------------------------------------------------

    async def refresh_changed(self) -> None:
        """Let the next scan of a target another process wrote (`exposuremon ack`) read it;
        in a fleet, also run the scans other nodes were asked for of this node's targets."""
        try:
            await self.pipeline.refresh_changed()
            if self._leases is not None:
                await self._run_requested_scans(self._leases)
        except StoreError as exc:  # the next look tries again; scans go on meanwhile
            self.log.warning("could not look for changed targets", error=str(exc))

    async def _run_requested_scans(self, leases: LeaseKeeper) -> None:
        held = leases.held
        requested = await self.store.take_scan_requests(leases.identity.vantage, held.keys())
        for name, kind, ports in requested:
            if self._target(name) is None:
                continue
            if ports is None:
                self._scheduler.run_soon(name, kind)
            else:  # another vantage saw these ports open first: look from here at once
                self._jobs_add(asyncio.get_running_loop().create_task(self.reprobe(name, ports)))

    async def reprobe(self, name: str, ports: frozenset[int]) -> None:
        """Another vantage's re-probe request: a sentinel scan of `name` with `ports` added,
        written at once (its answer goes into the finding's `seen_from`)."""
        target = self._target(name)
        if target is None or self._stop_requested.is_set() or not self.owns(name):
            return
        try:
            await self.pipeline.run(
                target, ScanKind.SENTINEL, hold_quiet=False, extra_ports=sorted(ports)
            )
        except ScanError as exc:
            self.log.warning("re-probe failed", target=name, error=str(exc))
        except Exception:
            self.log.exception("re-probe crashed", target=name)

    async def _request_reprobe(self, name: str, ports: frozenset[int]) -> None:
        """Ask the other vantages to re-probe `ports` of `name` (fleet mode)."""
        leases = self._leases
        if leases is None:
            return
        shard = shard_of(name, leases.shards)
        try:
            asked = await self.store.request_reprobe(leases.identity.vantage, shard, name, ports)
        except StoreError as exc:
            self.log.warning(
                "could not ask other vantages to re-probe", target=name, error=str(exc)
            )
            return
        if asked:
            self.log.info(
                "re-probe asked of other vantages",
                target=name,
                ports=sorted(ports),
                vantages=asked,
            )

    async def report_late(self) -> None:
        """Log the scans that ran late or not at all since the last call (one line per kind)."""
        for late in self._late.summary():
            self.log.warning(
                "scans late",
                kind=late.kind.value,
                started_late=late.late,
                skipped=late.skipped,
                worst_lag_s=late.worst_lag,
                every_s=LATE_SUMMARY_EVERY,
            )

    def _schedules(
        self, config: Config, owned: frozenset[str] | None
    ) -> tuple[list[JobSpec], dict[str, SweepSpec]]:
        """What to schedule of `config`'s targets (`owned` only, in a fleet): quick and full
        scans as APScheduler jobs, sentinel scans swept."""
        jobs: list[JobSpec] = []
        sweeps: dict[str, SweepSpec] = {}
        for target in config.targets:
            if owned is not None and target.name not in owned:
                continue  # another node's (fleet mode)
            schedule = target.effective_schedule(config.schedule)
            for kind in (ScanKind.QUICK, ScanKind.FULL):
                jobs.append(JobSpec(target.name, kind, schedule.interval(kind), schedule.jitter))
            sweeps[target.name] = SweepSpec(schedule.interval(ScanKind.SENTINEL), schedule.jitter)
        return jobs, sweeps

    def _first_sentinels(
        self, last_scans: dict[tuple[str, ScanKind], dt.datetime], window: float | None = None
    ) -> Callable[[str, SweepSpec, int, int], float]:
        """When a (re)planned target's first sentinel scan is due, on the monotonic clock
        (overdue ones spread over `window` s, default `first_run`'s)."""
        now, mono = self.clock(), time.monotonic()

        def first_due(name: str, spec: SweepSpec, index: int, count: int) -> float:
            job = JobSpec(name, ScanKind.SENTINEL, spec.interval, spec.jitter)
            last = last_scans.get((name, ScanKind.SENTINEL))
            start = first_run(job, last, now, index, count, window)
            return mono + (start - now).total_seconds()

        return first_due

    def _target(self, name: str) -> TargetConfig | None:
        # By name, rebuilt when the config object changes: 333 lookups a second at 10,000
        # targets made a scan through the list 4% of the daemon's time.
        if self._targets_of is not self.config:
            self._targets = {t.name: t for t in self.config.targets}
            self._targets_of = self.config
        return self._targets.get(name)

    def _jobs_add(self, task: asyncio.Task[Any]) -> None:
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _scan_skipped(self, kind: ScanKind) -> None:
        self._late.skipped(kind)
        self.metrics.record_skipped(kind)

    async def _sentinel_due(self, name: str, due: float) -> None:
        await self.scan_target(name, ScanKind.SENTINEL, due=due)

    async def scan_target(
        self,
        name: str,
        kind: ScanKind,
        *,
        due: float | None = None,
        on_demand: bool = False,
        fresh: bool = False,
    ) -> None:
        """One scan of one target.

        `due`: when it was due on the monotonic clock (sweeps); None: now (APScheduler jobs
        call it when due). How long after that it gets its slot is its lag. `on_demand`: asked
        for (API, CLI), so it is written at once even when it changed nothing. `fresh`: it
        must see the target as it is from now on (a reboot's follow-up).

        While the same scan of the target is in progress, a scheduled one is skipped (the
        one in progress does its work); an on-demand or fresh one runs after it ends, since
        the one in progress may have started before the moment it must see.
        """
        due = time.monotonic() if due is None else due
        target = self._target(name)
        key = (name, kind)
        if target is None or self._stop_requested.is_set() or not self.owns(name):
            return
        # Checked and reserved with no await in between: follow-up and on-demand jobs have
        # their own ids, so APScheduler's max_instances alone does not keep them apart.
        if key in self._claimed:
            if on_demand or fresh:
                self._again[key] = self._again.get(key, False) or on_demand
            return
        self._claimed.add(key)
        task = asyncio.current_task()
        if task is not None:
            self._jobs_add(task)
        log = self.log.bind(target=name, kind=kind.value)
        # Sentinel scans got their slot from the sweeper; the others wait for one of theirs,
        # and then until the sentinel scans are on time (schedule/sweep.py, "come first").
        slots = contextlib.nullcontext() if kind is ScanKind.SENTINEL else self._slots
        try:
            async with slots:
                if kind is not ScanKind.SENTINEL:
                    await self._sweeper.caught_up()
                if self._stop_requested.is_set():  # waited for a slot through a stop
                    return
                lag = time.monotonic() - due
                self.metrics.record_start(kind, lag, self._late.started(kind, lag))
                done = await self.pipeline.run(target, kind, hold_quiet=not on_demand)
            self.scans_recorded += done is not None
        except ScanError as exc:
            log.warning("scan failed", error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scan job crashed")
        finally:
            self._claimed.discard(key)
            self._run_again(key)

    def _rebooted(self, name: str) -> None:
        """A recorded result suspects a reboot: follow-up scans see what came back."""
        if not self._stop_requested.is_set():
            self._scheduler.after_reboot(name, self.clock())

    async def tick_health(self) -> None:
        """Record silences held for a round; share a health change the store missed."""
        try:
            await self.pipeline.tick_health()
        except StoreError as exc:  # the next tick tries again
            self.log.warning("could not record held scan results", error=str(exc))

    def _run_again(self, key: tuple[str, ScanKind]) -> None:
        """Start the scan asked for while `key`'s last one was in progress, if any."""
        on_demand = self._again.pop(key, None)
        if on_demand is None or self._stop_requested.is_set():
            return
        name, kind = key
        task = asyncio.get_running_loop().create_task(
            self.scan_target(name, kind, on_demand=on_demand, fresh=True)
        )
        self._jobs_add(task)

    # -- API backend (exposuremon.web.api.Backend; also: store, config, not_ready) ----------------

    def connection_rate(self, target: str) -> float | None:
        """New connections/s the target accepts, where scans found it limits them; else None."""
        return None if self._pipeline is None else self._pipeline.connection_rates.get(target)

    async def scan_now(self, target: str) -> bool:
        """Schedule an on-demand quick scan of `target` now; False when it is not configured.

        In a fleet, a target of another node's shard is asked of that node through the store
        (it takes the request within a second, `refresh_changed`).
        """
        if self._target(target) is None:
            return False
        leases = self._leases
        if leases is None or leases.owns(target):
            self._scheduler.run_soon(target, ScanKind.QUICK)
            return True
        shard = shard_of(target, leases.shards)
        await self.store.request_scan(leases.identity.vantage, shard, target, ScanKind.QUICK)
        return True

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """Acknowledge a finding (LookupError: unknown, ValueError: resolved), never mid-scan."""
        finding = await self.store.finding(finding_id)
        if finding is None:
            raise LookupError(f"no finding with id {finding_id}")
        # Under the target's lock: a scan's evaluation cannot overwrite the ack with stale state.
        async with self.pipeline.target_lock(finding.target):
            acked = await acks.ack_finding(self.store, finding_id, until, reason, self.clock())
            self.pipeline.forget(finding.target)  # the next scan reads the acked state
        return acked
