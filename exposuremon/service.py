"""The daemon: one object owns the lifecycle, store → scheduler → HTTP server → run → stop.

Signal handlers only set a flag or schedule work (`request_stop`, `request_reload`). A scan
job is: scan the target's ports, re-probe ports that newly answered open (confirmation),
fingerprint what is newly open, then, under the target's lock, take its state (from the store
when an ack may have changed it), evaluate (pure, detect.py) and apply the outcome to the
store in one transaction, or hold it when only time passed (quiet scans, flushed each minute).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from exposuremon import acks, detect
from exposuremon.config import Config, ConfigError, TargetConfig, load_config
from exposuremon.logs import get_logger
from exposuremon.metrics import Metrics, StateCollector
from exposuremon.model import (
    EvidenceTimes,
    Finding,
    Fingerprint,
    Observation,
    Observed,
    ScanKind,
    TargetState,
)
from exposuremon.notify.outbox import Notifier, NullNotifier, router
from exposuremon.scan.engine import Scanner
from exposuremon.scan.fingerprint import fingerprint_many
from exposuremon.scan.result import PortState, ScanResult
from exposuremon.scan.target import ScanError, TargetScan
from exposuremon.scan.timing import ScanOptions
from exposuremon.scheduler import JobSpec, ScanScheduler
from exposuremon.store import ScanRecord, Store
from exposuremon.systemd import SystemdNotifier, service_status
from exposuremon.web import HttpServer, make_app

MAX_FINGERPRINTS = 64  # ports fingerprinted per scan at most
STOP_GRACE = 5.0  # seconds running scans get to record their partial results on shutdown
QUIET_FLUSH = 60.0  # seconds between writes of quiet scans' times
NOTIFY_TIMEOUT = 10.0  # seconds per webhook request
STATUS_EVERY = 60.0  # seconds between STATUS= updates to systemd


def utcnow() -> dt.datetime:
    """The service's clock (UTC)."""
    return dt.datetime.now(dt.UTC)


def ever_open(state: TargetState) -> frozenset[int]:
    """Ports of a target that were ever seen open: the sentinel scans keep watching them."""
    return frozenset(
        p for p, rec in state.ports.items() if rec.times_opened or rec.state is Observed.OPEN
    )


def observation(
    target: str,
    kind: ScanKind,
    result: ScanResult,
    confirmed: Iterable[int],
    fingerprints: Mapping[int, Fingerprint],
) -> Observation:
    """The detection input built from an engine result (unfinished ports left out)."""
    states = {
        port: Observed(state.label)
        for port, state in result.items()
        if state is not PortState.UNKNOWN
    }
    # Evidence carries its own time (issue 13): when each probe was sent, not when the scan
    # (or its confirmation and fingerprints) finished.
    evidence = result.evidence
    times: dict[str, Any] = {}
    if evidence is not None:
        times = {
            "seen_at": EvidenceTimes(result.started, evidence.sent),
            "answered_at": None
            if evidence.answered is None
            else result.started + dt.timedelta(seconds=evidence.answered),
            "filtered_live": evidence.filtered_live,
        }
    return Observation(
        target=target,
        kind=kind,
        address=result.address,
        started=result.started,
        finished=result.finished,
        complete=result.complete,
        states=states,
        confirmed_open=frozenset(confirmed),
        fingerprints=fingerprints,
        responded=result.responded,
        dropped=result.stats.loss_events > 0,
        **times,
    )


class Service:
    """Owns the store, scanner, scheduler and HTTP server of one daemon."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = Metrics(registry)
        # Not in the registry: /metrics adds its families with a faster renderer (exposition.py).
        self.state_metrics = StateCollector(
            lambda: self.store.gauges(), lambda: self.config, lambda: self._quiet
        )
        self.log = get_logger()
        self._store: Store | None = None
        self._scanner: Scanner | None = None
        self._http: HttpServer | None = None
        self._scheduler = ScanScheduler(self.scan_target)
        self._running: dict[tuple[str, ScanKind], TargetScan] = {}
        self._claimed: set[tuple[str, ScanKind]] = set()  # scans in progress, any stage
        self._seen: dict[str, TargetState] = {}  # last state applied per target
        # Quiet sentinel scans (nothing but time passed) are not written one by one: their
        # times are flushed every QUIET_FLUSH seconds, and at stop. A crash loses only those.
        self._quiet: dict[str, TargetState] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._stop_requested = asyncio.Event()
        self._slots = asyncio.Semaphore(config.scan.max_concurrent_scans)
        self._ready = False
        self.scans_recorded = 0
        self.systemd = SystemdNotifier.from_env()  # does nothing outside systemd
        self._reload_error: str | None = None  # why the last reload was refused
        # Chat delivery (notify/outbox.py): a real worker once the store is open.
        self.notifications: Notifier | NullNotifier = NullNotifier()
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (after start)."""
        if self._store is None:
            raise RuntimeError("service not started")
        return self._store

    @property
    def http_address(self) -> tuple[str, int] | None:
        """Where the HTTP server listens (after start)."""
        return None if self._http is None else self._http.bound

    async def start(self) -> None:
        """Open the store, start scanning and serving; ready when this returns."""
        # Pinging from the start: migrations may take long, and run in a thread.
        self.systemd.start_watchdog()
        self._store = await Store.open(self.config.daemon.state_dir)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=NOTIFY_TIMEOUT))
        self.notifications = Notifier(
            self._store,
            self.config.notify,
            self._session,
            self.metrics,
            public_url=self.config.http.public_url,
        )
        self.notifications.start()  # delivers what an earlier run left in the outbox
        self._scanner = Scanner()
        app = make_app(self.metrics.registry, self, state=self.state_metrics)
        self._http = HttpServer(app, self.config.http.host, self.config.http.port)
        await self._http.start()
        self._scheduler.start()
        self._scheduler.sync(self._job_specs(), await self._store.last_scans(), utcnow())
        self._scheduler.add_maintenance(self.prune, interval=3600.0)
        self._scheduler.add_maintenance(self.flush_quiet, interval=QUIET_FLUSH)
        self._scheduler.add_maintenance(self.refresh_status, interval=STATUS_EVERY)
        self._ready = True
        self.log.info(
            "started",
            targets=len(self.config.targets),
            listen=f"{self.config.http.host}:{self.config.http.port}",
            state_dir=str(self.config.daemon.state_dir),
        )
        self.systemd.ready()
        await self.refresh_status()

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
        for running in list(self._running.values()):
            running.stop()
        pending = [t for t in self._jobs if t is not asyncio.current_task()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
        await self._scheduler.shutdown()
        if self._store is not None:
            try:
                await self.flush_quiet()
            except Exception:  # stopping must go on: only "last seen" times are at stake
                self.log.exception("could not write the times of quiet scans")
        if self._http is not None:
            await self._http.stop()
        if self._scanner is not None:
            self._scanner.close()
        if self._store is not None:
            await self.notifications.stop()  # settles a delivery in flight, so before close
            await self._store.close()
        if self._session is not None:
            await self._session.close()
        self.log.info("stopped", scans_recorded=self.scans_recorded)
        await self.systemd.stop_watchdog()  # last: a slow shutdown is still a live one

    def not_ready(self) -> str | None:
        """None when ready to serve, else why not (for /readyz)."""
        if not self._ready:
            return "starting" if not self._stop_requested.is_set() else "stopping"
        if not self._scheduler.running:
            return "scheduler not running"
        return None

    async def refresh_status(self) -> None:
        """Tell systemd the one-line status: targets, open findings, last scan, reload error."""
        names = [t.name for t in self.config.targets]
        self.systemd.status(service_status(names, self._seen, self._reload_error))

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
        try:
            new = load_config(path)
        except ConfigError as exc:
            self._reload_error = "; ".join(exc.errors)
            self.log.error("reload rejected, keeping the running config", errors=exc.errors)
            return False
        old_names = {t.name for t in self.config.targets}
        self.config = new
        self.notifications.reconfigure(new.notify, new.http.public_url)
        self._scheduler.sync(self._job_specs(), await self.store.last_scans(), utcnow())
        names = {t.name for t in new.targets}
        self.log.info(
            "reloaded",
            targets=len(names),
            added=sorted(names - old_names),
            removed=sorted(old_names - names),
        )
        self._reload_error = None
        return True

    @staticmethod
    def _is_quiet(
        kind: ScanKind, result: ScanResult, prev: TargetState, outcome: detect.Evaluation
    ) -> bool:
        """A complete sentinel scan after which only time has passed: no write needed now."""
        return (
            kind is ScanKind.SENTINEL
            and result.complete
            and not outcome.events
            and not outcome.findings
            and not outcome.reboot_suspected
            and prev.last_observed is not None  # the first scan of a target is always written
            and detect.only_time_advanced(prev, outcome.state)
        )

    async def flush_quiet(self) -> None:
        """Write the times of quiet scans held since the last flush."""
        batch, self._quiet = self._quiet, {}
        try:
            await self.store.touch(list(batch.values()))
        except Exception:
            # Keep them for the next flush, unless newer ones arrived meanwhile.
            self._quiet = batch | self._quiet
            raise

    async def prune(self) -> None:
        """Drop scans and events older than the retention."""
        cutoff = utcnow() - dt.timedelta(seconds=self.config.daemon.retention)
        counts = await self.store.prune(cutoff)
        if any(counts.values()):
            self.log.info("pruned", **counts)

    # -- scanning --------------------------------------------------------------------------

    def _job_specs(self) -> list[JobSpec]:
        specs = []
        for target in self.config.targets:
            schedule = target.effective_schedule(self.config.schedule)
            for kind in ScanKind:
                specs.append(JobSpec(target.name, kind, schedule.interval(kind), schedule.jitter))
        return specs

    def _target(self, name: str) -> TargetConfig | None:
        return next((t for t in self.config.targets if t.name == name), None)

    def _jobs_add(self, task: asyncio.Task[Any]) -> None:
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def scan_target(self, name: str, kind: ScanKind) -> None:
        """One scheduled scan of one target (skipped if the same scan is still running)."""
        target = self._target(name)
        key = (name, kind)
        # Checked and reserved with no await in between: follow-up and on-demand jobs have
        # their own ids, so APScheduler's max_instances alone does not keep them apart.
        if target is None or self._stop_requested.is_set() or key in self._claimed:
            return
        self._claimed.add(key)
        task = asyncio.current_task()
        if task is not None:
            self._jobs_add(task)
        log = self.log.bind(target=name, kind=kind.value)
        try:
            async with self._slots:
                if self._stop_requested.is_set():  # waited for a slot through a stop
                    return
                await self._scan_and_record(target, kind)
        except ScanError as exc:
            log.warning("scan failed", error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scan job crashed")
        finally:
            self._claimed.discard(key)

    async def _scan_and_record(self, target: TargetConfig, kind: ScanKind) -> None:
        assert self._scanner is not None
        store = self.store
        # What to scan comes from the last state this service saw (no database round trip);
        # detection below works on the state freshly loaded under the target's lock.
        before = self._seen.get(target.name) or await store.load_state(target.name)
        ports = sorted(target.ports_for(kind, ever_open(before)))
        known_open = {p for p, rec in before.ports.items() if rec.state is Observed.OPEN}
        options = target.effective_scan(self.config.scan).scan_options()
        running = self._scanner.start(
            target.address, ports, options, hints=[*target.expected_open, *known_open]
        )
        self._running[(target.name, kind)] = running
        self.log.debug("scan started", target=target.name, kind=kind.value, ports=len(ports))
        try:
            # The engine names results by what it resolved; the store knows the target's name.
            result = dataclasses.replace(await running.wait(), target=target.name)
        except asyncio.CancelledError:
            running.stop()  # wait() is shielded: cancelling it alone would leave it scanning
            raise
        finally:
            self._running.pop((target.name, kind), None)
        if not result.address:
            return  # stopped before the name resolved: nothing was observed
        self.metrics.record_scan(kind, result)
        confirmed, fingerprints = await self._confirm_and_fingerprint(
            target, kind, result, known_open, options
        )
        # The look ends after confirmation and fingerprints: dated then, a quick scan whose
        # fingerprints took seconds is not older than the sentinel scans that ran meanwhile.
        looked = dataclasses.replace(result, finished=max(result.finished, utcnow()))
        obs = observation(target.name, kind, looked, confirmed, fingerprints)
        async with self._locks[target.name]:
            seen = self._seen.get(target.name)
            if seen is not None and not seen.findings:
                # Only `exposuremon ack` writes besides this service, and only to an active
                # finding: a target without one cannot have changed behind our back.
                stored = seen
            else:
                stored = await store.load_state(target.name)  # an ack may have come in
            held = self._quiet.get(target.name)
            # Times of quiet scans not yet written are newer than the stored ones; anything
            # else changed in the store (an ack) wins over what this service holds.
            prev = held if held and detect.only_time_advanced(stored, held) else stored
            outcome = detect.evaluate(prev, obs, target.policy(self.config.scan), utcnow())
            if self._is_quiet(kind, result, prev, outcome):
                self._quiet[target.name] = self._seen[target.name] = outcome.state
            else:
                applied = await store.apply(
                    ScanRecord.from_result(kind, result),
                    outcome.state,
                    outcome.events,
                    outcome.findings,
                    router(self.config.notify, outcome.events, outcome.findings),
                )
                self._quiet.pop(target.name, None)
                self._seen[target.name] = applied.state
                if applied.events:
                    self.notifications.wake()
        self.scans_recorded += 1
        self.log.debug(
            "scan recorded",
            target=target.name,
            kind=kind.value,
            address=result.address,
            complete=result.complete,
            open=len(result.open),
            duration_s=round(result.duration, 3),
        )
        for event in outcome.events:
            self.log.info(
                event.type.value,
                target=target.name,
                port=event.port,
                severity=event.severity.label,
                summary=event.summary,
            )
        if outcome.reboot_suspected and not self._stop_requested.is_set():
            self._scheduler.after_reboot(target.name, utcnow())

    async def _confirm_and_fingerprint(
        self,
        target: TargetConfig,
        kind: ScanKind,
        result: ScanResult,
        known_open: set[int],
        options: ScanOptions,
    ) -> tuple[set[int], dict[int, Fingerprint]]:
        """Re-probe ports newly seen open; fingerprint what is new (or everything, off sentinel)."""
        assert self._scanner is not None
        open_now = set(result.open)
        new_open = open_now - known_open
        confirmed = open_now & known_open
        if not self.config.scan.confirm:
            confirmed = open_now
        elif new_open and not self._stop_requested.is_set():
            again = await self._scanner.scan(
                target.name, sorted(new_open), options, address=result.address
            )
            confirmed |= new_open & set(again.open)
        # Sentinel scans look only at what is newly open; quick and full ones look again at
        # every open port, so a new certificate after a reboot (the quick follow-up scan)
        # shows as a firmware change within seconds, not at the next full scan.
        look = confirmed - known_open if kind is ScanKind.SENTINEL else confirmed
        if len(look) > MAX_FINGERPRINTS:
            # A middlebox answering everything (detection calls it an anomaly) would keep us
            # busy for hours; a real router has few open ports.
            look = set(sorted(look)[:MAX_FINGERPRINTS])
        fingerprints: dict[int, Fingerprint] = {}
        if look and self.config.scan.fingerprint and not self._stop_requested.is_set():
            with contextlib.suppress(Exception):  # a fingerprint is a hint, never a failure
                fingerprints = dict(
                    await fingerprint_many(
                        result.address,
                        sorted(look),
                        timeout=self.config.scan.fingerprint_timeout,
                        server_name=None if target.ip is not None else target.address,
                    )
                )
        return confirmed, fingerprints

    # -- API backend (exposuremon.api.Backend; also: store, config, not_ready) ----------------

    def scan_now(self, target: str) -> bool:
        """Schedule an on-demand quick scan of `target` now; False when it is not configured."""
        if self._target(target) is None:
            return False
        self._scheduler.run_soon(target, ScanKind.QUICK)
        return True

    async def ack(self, finding_id: int, until: dt.datetime, reason: str) -> Finding:
        """Acknowledge a finding (LookupError: unknown, ValueError: resolved), never mid-scan."""
        finding = await self.store.finding(finding_id)
        if finding is None:
            raise LookupError(f"no finding with id {finding_id}")
        # Under the target's lock: a scan's evaluation cannot overwrite the ack with stale state.
        async with self._locks[finding.target]:
            acked = await acks.ack_finding(self.store, finding_id, until, reason, utcnow())
            self._seen.pop(finding.target, None)  # the next scan reads the acked state
        return acked
