"""The delivery worker: drains the store's notification outbox into the chat channels.

One lane (an asyncio task) per channel takes the channel's oldest due message (every pending
row of one scan of one target: one message, not one per event), waits for the channel's
rate limit, renders and POSTs it, and settles all its rows in one transaction: sent, dead
(permanent error, or past the retry horizon) or pending again after a backoff with jitter or
the receiver's Retry-After. After a failure the whole lane pauses as long, so a receiver
that is down or rate limiting sees one request per pause, not one per message.

Guarantee: at least once. A message is marked sent only after the receiver accepted it; a
crash between the two sends it again after the restart, with the same delivery id
(`<channel>/<group_key>`, in the `X-Exposuremon-Delivery` header and the message itself), so a
receiver that deduplicates on it shows it once. A row marked sent is never sent again.

A supervisor task queues reminders of open critical findings (`remind_every`, `remind_max`)
as outbox rows, so they get the same retries and guarantees.

In a fleet every node runs a notifier on the one shared outbox (docs/fleet.md, "Notifications
in a fleet"). A lane takes a message under a claim in the database (`Store.next_message` with
this node's name): no other node sees it until the claim ends (`Tuning.claim` after the rate
limit's wait). The rate limit is the channel's window in the database, booked in the same
transaction, so the nodes together keep to it; a receiver's Retry-After pauses every node. The
attempt is cut off before the claim ends, and the settle writes only while the claim is still
this one's: a node that stalled past its claim records nothing, the node that took the message
over sends it with the same delivery id. Without the database a lane sends nothing: it cannot
book the send in the window (it waits and tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp

from exposuremon.config import ConfigError, NotifyConfig, Rate
from exposuremon.logs import get_logger
from exposuremon.metrics import Metrics
from exposuremon.model import (
    NOTIFY_AS,
    DeliveryStatus,
    Event,
    EventType,
    Finding,
    FindingState,
    Severity,
)
from exposuremon.notify import delivery, formats
from exposuremon.notify.formats import SecretError, discord_url, split_ntfy_url
from exposuremon.notify.message import Message, MessageKind, Request
from exposuremon.notify.ratelimit import DEFAULT_RATES, Window
from exposuremon.notify.redaction import redact, secret_parts
from exposuremon.notify.retry import (
    Backoff,
    Decision,
    DeliveryOutcome,
    Permanent,
    Random,
    Retry,
    Sent,
    decide,
)
from exposuremon.store import Claim, Outgoing, ReminderRule, Store, StoreError
from exposuremon.units import utcnow

REMOVED = "channel removed from config"
# Seconds beyond one attempt's time limit that a delivery in flight gets to settle when the
# notifier stops: a restart must not cut off a POST the receiver may already have acted on
# (it would be sent twice). The unit's TimeoutStopSec= (30 s) leaves room for it.
STOP_GRACE = 2.0
# The share of a claim's time (after the rate limit's wait) that an attempt may use: the rest
# is for the settle to land while the claim still holds, whatever the database's latency.
SEND_SHARE = 0.75
# The shortest sleep of a lane that found its next message locked by another node's transaction
# (a take or a settle in progress): no spinning while that commits.
LOCKED_NAP = 0.05


# `notify.formats.render_parts(channel_type, message, *, secret=None, topic=None, now=None)`
Render = Callable[..., Sequence[Request]]


@dataclasses.dataclass(frozen=True, slots=True)
class Tuning:
    """Timing knobs; the defaults are for production, tests shorten them."""

    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    time_limit: float = delivery.TIMEOUT  # per HTTP attempt
    idle_poll: float = 60.0  # longest sleep of an idle lane (rows written by other processes)
    reminder_poll: float = 60.0  # how often due reminders are looked for (at most)
    error_pause: float = 5.0  # after a database error
    # Seconds a taken message stays claimed after its rate-limit wait: no other node takes it
    # meanwhile. The attempt (every part of the message, each within `time_limit`) is cut off
    # after SEND_SHARE of it, so it must leave room for at least one whole POST. A node that
    # dies mid-flight delays its message by at most this much (plus the wait).
    claim: float = 60.0

    def __post_init__(self) -> None:
        if self.claim * SEND_SHARE <= self.time_limit:
            raise ValueError(
                f"tuning: claim ({self.claim:g}s) must leave {SEND_SHARE:.0%} of it for an "
                f"attempt of time_limit {self.time_limit:g}s"
            )


def rate_of(channel: NotifyConfig) -> Rate:
    """The channel's rate limit: its `rate`, else the default of its type."""
    return channel.rate or DEFAULT_RATES[channel.type]


def endpoint(channel_type: str, url: str) -> tuple[str, str | None]:
    """Where to POST and the ntfy topic: ntfy takes JSON at the server's root, topic inside.

    Discord gets `?wait=true`, so that a message it does not save is an error, not a 204.
    """
    if channel_type == "ntfy":
        root, topic = split_ntfy_url(url)
        return root, topic
    if channel_type == "discord":
        return discord_url(url), None
    return url, None


_LABELS = {s.label: s for s in Severity}


def channels_for_events(
    channels: Sequence[NotifyConfig], events: Sequence[Event], findings: Sequence[Finding]
) -> Callable[[Event], list[str]]:
    """Which channels get each event of one scan (`store.Store.apply`'s `channels`).

    A channel gets the events it wants (target in scope, severity at least its minimum).
    Resolved notices: a finding_resolved counts with the severity of the finding it resolves,
    so every channel told of a finding hears that it is gone; an event with `notify_as` in its
    details (the end of a flap episode, a cleared advisory) counts with that severity, the one
    its beginning was raised at. Target-level events (reboot,
    down, up, address) go along as context to every channel that gets something of the scan.
    """
    resolved = {f.port: f.severity for f in findings if f.state is FindingState.RESOLVED}

    def severity(e: Event) -> Severity:
        if e.type is EventType.FINDING_RESOLVED and e.port in resolved:
            return max(e.severity, resolved[e.port])
        routed = e.details.get(NOTIFY_AS)
        if isinstance(routed, str) and routed in _LABELS:
            return max(e.severity, _LABELS[routed])
        return e.severity

    busy = {c.name for c in channels if any(c.wants(e.target, severity(e)) for e in events)}

    def route(e: Event) -> list[str]:
        return [
            c.name
            for c in channels
            if c.wants(e.target, severity(e)) or (e.port is None and c.name in busy)
        ]

    return route


async def send_test(
    channel: NotifyConfig,
    session: aiohttp.ClientSession,
    *,
    public_url: str | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
    render: Render = formats.render_parts,
) -> str | None:
    """Send a clearly marked test message to `channel`: None on success, else the error."""
    now = clock()
    message = Message(
        target="exposuremon",
        address=None,
        events=(),
        kind=MessageKind.TEST,
        public_url=public_url,
        delivery_id=f"{channel.name}/test/{now:%Y%m%dT%H%M%S.%fZ}",
    )
    outcome = await attempt(channel, message, session, render=render, clock=clock)
    return None if isinstance(outcome, Sent) else outcome.error


async def attempt(
    channel: NotifyConfig,
    message: Message,
    session: aiohttp.ClientSession,
    *,
    render: Render = formats.render_parts,
    tuning: Tuning = Tuning(),
    clock: Callable[[], dt.datetime] = utcnow,
) -> DeliveryOutcome:
    """Render `message` for `channel` and POST it once (each part in order); no secret in errors.

    A message in several parts (a large webhook group) is sent only when every part was: the
    first failure is the outcome, and a retry sends every part again with the same delivery
    ids (receivers dedup on them).
    """
    try:
        url = channel.resolve_url()
        secret = channel.resolve_secret()
    except ConfigError as exc:  # e.g. the env var is gone: may come back, so retry
        return Retry("; ".join(exc.errors))
    secrets = secret_parts(url, secret)
    try:
        post_url, topic = endpoint(channel.type, url)
    except ValueError as exc:  # the URL read from env or file is unusable: fix and reload
        return Retry(redact(f"{channel.name}: {exc}", secrets))
    try:
        requests = render(channel.type, message, secret=secret, topic=topic, now=clock())
    except SecretError as exc:  # the secret read from env or file is unusable: fix and reload
        return Retry(f"{channel.name}: {exc}")
    except Exception as exc:  # a renderer bug must not stop the lane; retrying won't help
        get_logger(component="notify").exception("rendering failed", channel=channel.name)
        return Permanent(redact(f"cannot render the message: {exc}", secrets))
    outcome: DeliveryOutcome = Permanent("nothing to send")
    for n, request in enumerate(requests, 1):
        outcome = await delivery.post(
            session,
            post_url,
            request,
            delivery_id=message.delivery_id,
            secrets=secrets,
            time_limit=tuning.time_limit,
            retry_after_limits=tuning.backoff.retry_after,
            clock=clock,
        )
        if isinstance(outcome, Sent):
            continue
        if len(requests) > 1:
            where = f"part {n} of {len(requests)}: "
            if isinstance(outcome, Retry):
                return Retry(where + outcome.error, outcome.after)
            return Permanent(where + outcome.error)
        return outcome
    return outcome


class Notifier:
    """Delivers the outbox to the configured channels until stopped."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[NotifyConfig],
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        public_url: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        rng: Random | None = None,
        tuning: Tuning = Tuning(),
        render: Render = formats.render_parts,
        node: str | None = None,
    ) -> None:
        self.store = store
        # This node's name in the fleet ([fleet] node; the host name by default): its claims
        # carry it. Unique per fleet: a node starting again releases the claims of its name.
        self.node = node or socket.gethostname()
        self.session = session
        self.metrics = metrics
        self.public_url = public_url
        self.clock = clock
        self.rng: Random = rng if rng is not None else random.Random()
        self.tuning = tuning
        self.render = render
        self.log = get_logger(component="notify")
        self._channels: dict[str, NotifyConfig] = {c.name: c for c in channels}
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poke = asyncio.Event()
        self._stopping = False
        self._started = False
        self._reconfigured = False  # the supervisor re-reads the reminder rules
        self._ending: dict[str, asyncio.Task[Any]] = {}  # lanes of removed channels, ending
        self._ready = asyncio.Event()  # the claims of this node's earlier process are released

    @property
    def channels(self) -> dict[str, NotifyConfig]:
        """The configured channels by name."""
        return dict(self._channels)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start one lane per channel and the supervisor (reminders, removed channels)."""
        if self._started:
            return
        self._started = True
        self._spawn(self._release_earlier_claims())
        for channel in self._channels.values():
            self._start_lane(channel)
        self._spawn(self._supervise())

    async def _release_earlier_claims(self) -> None:
        # What this node's earlier process had in flight when it died goes again now (with
        # the same delivery id), not only when its claims run out: as on a single node.
        try:
            released = await self.store.release_claims_of(self.node)
        except StoreError as exc:  # its claims run out by themselves
            self.log.error("could not release earlier claims", error=str(exc))
        else:
            if released:
                self.log.info("claims of an earlier run released", deliveries=released)
        finally:
            self._ready.set()

    def wake(self) -> None:
        """New rows were written: look at the outbox now instead of at the next poll."""
        for lane in self._lanes.values():
            lane.wake()
        self._poke.set()

    def outbox_written(self, channels: Iterable[str]) -> None:
        """A scan wrote outbox rows for `channels`: their lanes look now, not at the next poll."""
        for name in channels:
            lane = self._lanes.get(name)
            if lane is not None:
                lane.wake()
        self._poke.set()

    async def stop(self) -> None:
        """Stop delivering; a POST in flight may finish (its time limit) and settle."""
        self._stopping = True
        for lane in self._lanes.values():
            lane.stop()
        self._poke.set()
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.tuning.time_limit + STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._lanes.clear()

    def reconfigure(self, channels: Sequence[NotifyConfig], public_url: str | None) -> None:
        """Apply a reloaded config: lanes for new channels, removed ones end (rows go dead)."""
        new = {c.name: c for c in channels}
        removed = [name for name in self._channels if name not in new]
        self._channels = new
        self.public_url = public_url
        if not self._started or self._stopping:
            return
        ending: list[asyncio.Task[Any]] = []
        for name in removed:
            lane = self._lanes.pop(name, None)
            if lane is not None:
                lane.stop()
                if lane.task is not None:
                    ending.append(lane.task)
                    self._ending[name] = lane.task
        for channel in new.values():
            lane = self._lanes.get(channel.name)
            if lane is None:
                self._start_lane(channel)
            else:
                lane.update(channel)
        self._spawn(self._retire_after(ending))
        self._spawn(self._retry_now())
        self._reconfigured = True
        self._poke.set()

    async def _retry_now(self) -> None:
        # A reload is the operator's "fixed it" (a URL file, a receiver): what waits for a
        # retry goes now, not after a backoff of up to 15 minutes.
        try:
            waiting = await self.store.retry_now(self.clock())
        except StoreError as exc:
            self.log.error("could not reschedule deliveries", error=str(exc))
            return
        if waiting:
            self.log.info("deliveries retried after reload", deliveries=waiting)
        for lane in self._lanes.values():
            lane.interrupt()

    def _start_lane(self, channel: NotifyConfig) -> None:
        lane = _Lane(self, channel)
        self._lanes[channel.name] = lane
        # A channel removed and added back by two quick reloads: its old lane may still be
        # posting; the new one starts after it, or both would send that message.
        previous = self._ending.pop(channel.name, None)
        lane.task = self._spawn(lane.run(after=previous))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- supervisor ------------------------------------------------------------------------

    async def _supervise(self) -> None:
        await self._retire()
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._reconfigured = False
            rules = self._reminder_rules()
            if rules:
                try:
                    await self._queue_reminders(rules)
                except Exception:  # as for lanes: log, and try again next time
                    self.log.exception("queueing reminders failed")
            interval = self._reminder_interval(rules)
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(loop.time() + interval):
                    # A wake is for the lanes; a stop or new channels end this wait.
                    while not (self._stopping or self._reconfigured):
                        await self._poke.wait()
                        self._poke.clear()

    def _reminder_rules(self) -> list[ReminderRule]:
        return [
            ReminderRule(c.name, dt.timedelta(seconds=c.remind_every), c.remind_max, c.targets)
            for c in self._channels.values()
            if c.remind_every is not None
        ]

    def _reminder_interval(self, rules: Sequence[ReminderRule]) -> float:
        if not rules:
            return self.tuning.idle_poll
        shortest = min(r.every.total_seconds() for r in rules)
        # A tenth of the shortest interval keeps reminders punctual within 10 %.
        return min(self.tuning.reminder_poll, max(shortest / 10, 0.05))

    async def _queue_reminders(self, rules: Sequence[ReminderRule]) -> None:
        try:
            counts = await self.store.enqueue_reminders(rules, self.clock())
        except StoreError as exc:
            self.log.error("could not queue reminders", error=str(exc))
            return
        for channel, n in counts.items():
            self.log.info("reminders queued", channel=channel, findings=n)
            lane = self._lanes.get(channel)
            if lane is not None:
                lane.wake()

    async def _retire_after(self, ending: Iterable[asyncio.Task[Any]]) -> None:
        waiting = list(ending)
        if waiting:
            await asyncio.wait(waiting, timeout=STOP_GRACE + self.tuning.time_limit)
        await self._retire()

    async def _retire(self) -> None:
        """Dead-letter what waits for channels that are no longer configured (logged once)."""
        try:
            counts = await self.store.retire_channels(sorted(self._channels), REMOVED)
        except StoreError as exc:
            self.log.error("could not retire removed channels", error=str(exc))
            return
        for channel, n in counts.items():
            self.metrics.notifications.labels(channel=channel, result="dead").inc(n)
            self.log.warning("deliveries dropped", channel=channel, deliveries=n, reason=REMOVED)

    # -- one attempt -----------------------------------------------------------------------

    async def send_test(self, channel: str) -> str | None:
        """Send a test message to `channel` now: None on success, else what went wrong."""
        config = self._channels.get(channel)
        if config is None:
            known = ", ".join(sorted(self._channels)) or "none"
            return f"no [[notify]] channel named {channel!r} (configured: {known})"
        return await send_test(
            config, self.session, public_url=self.public_url, clock=self.clock, render=self.render
        )

    async def attempt(self, channel: NotifyConfig, message: Message) -> DeliveryOutcome:
        """Render `message` for `channel` and POST it once; errors carry no secret."""
        return await attempt(
            channel, message, self.session, render=self.render, tuning=self.tuning, clock=self.clock
        )

    def message_of(self, out: Outgoing) -> Message:
        """The chat message of an outbox message."""
        vantage = next((e.vantage for e in out.events if e.target is None), None)
        return Message(
            target=out.target or "",
            vantage=vantage,
            address=out.address,
            events=out.events,
            kind=MessageKind.REMINDER if out.is_reminder else MessageKind.EVENTS,
            public_url=self.public_url,
            delivery_id=out.delivery_id,
            reminder_count=out.reminder_count,
        )


class _Lane:
    """One channel's delivery loop: strictly one message at a time, in outbox order."""

    def __init__(self, notifier: Notifier, channel: NotifyConfig) -> None:
        self.notifier = notifier
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        # The channel's rate limit, booked in its window in the database (microseconds).
        self.window = Window.of(rate_of(channel), unit=1e6)
        self.task: asyncio.Task[Any] | None = None
        self.log = notifier.log.bind(channel=channel.name, type=channel.type)
        self._poke = asyncio.Event()
        self._woken = False
        self._interrupted = False
        self._stopping = False

    def wake(self) -> None:
        self._woken = True
        self._poke.set()

    def stop(self) -> None:
        self._stopping = True
        self._poke.set()

    def interrupt(self) -> None:
        """End any pause now (a failure's backoff too) and look for due messages."""
        self._interrupted = True
        self.wake()

    def update(self, channel: NotifyConfig) -> None:
        """Take a reloaded config of this channel (a new rate counts the sends booked so far)."""
        self.window = Window.of(rate_of(channel), unit=1e6)
        self.channel = channel
        self.log = self.notifier.log.bind(channel=channel.name, type=channel.type)

    async def run(self, after: asyncio.Task[Any] | None = None) -> None:
        if after is not None:
            await asyncio.wait([after])  # ends within its POST's time limit (see stop)
        await self.notifier._ready.wait()
        while not self._stopping:
            try:
                await self._step()
            except Exception:  # a bug must not end the channel's deliveries for good
                self.log.exception("delivery lane failed; going on")
                await self._nap(self.notifier.tuning.error_pause, wakeable=False)

    async def _step(self) -> None:
        """Deliver the next due message, or sleep until one is due or a wake comes."""
        self._woken = False
        tuning = self.notifier.tuning
        started = self.loop.time()  # before the claim: the send deadline errs early
        try:
            out, due = await self.notifier.store.next_message(
                self.channel.name,
                self.notifier.clock(),
                node=self.notifier.node,
                claim_for=tuning.claim,
                pace=self.window.reserve,
            )
        except StoreError as exc:
            # Nothing is sent without the channel's window: wait for the database.
            self.log.error("could not read the outbox", error=str(exc))
            await self._nap(tuning.error_pause, wakeable=False)
            return
        if out is None or out.claim is None:
            idle = tuning.idle_poll
            if due is not None:
                left = (due - self.notifier.clock()).total_seconds()
                idle = min(idle, max(left, LOCKED_NAP))
            await self._nap(idle, wakeable=True)
            return
        claim = out.claim
        # The rate limit holds even after a reload: not interruptible.
        await self._nap(claim.wait, wakeable=False, interruptible=False)
        if self._stopping:
            await self._release(out, claim)
            return
        deadline = started + claim.wait + tuning.claim * SEND_SHARE
        decision = await self._deliver(out, claim, deadline)
        if decision is not None and decision.status is DeliveryStatus.PENDING:
            # The channel is failing or rate limited: pause it, not just this message.
            await self._nap(decision.wait, wakeable=False)

    async def _release(self, out: Outgoing, claim: Claim) -> None:
        """Give a taken message back unsent (stopping): another node may take it at once."""
        try:
            await self.notifier.store.release_claim(claim)
        except StoreError as exc:  # the claim runs out by itself
            self.log.error("could not release a claim", error=str(exc), delivery=out.delivery_id)

    async def _attempt(self, out: Outgoing, deadline: float) -> DeliveryOutcome:
        """One attempt, cut off before the claim ends (then another node may take it)."""
        left = deadline - self.loop.time()
        if left <= 0:  # this process stalled past its claim: do not send what is not ours
            return Retry("not sent: the claim on it ran out before the attempt")
        try:
            async with asyncio.timeout(left):
                return await self.notifier.attempt(self.channel, self.notifier.message_of(out))
        except TimeoutError:
            return Retry(f"no answer within the claim ({self.notifier.tuning.claim:g}s)")

    async def _deliver(self, out: Outgoing, claim: Claim, deadline: float) -> Decision | None:
        name = self.channel.name
        outcome = await self._attempt(out, deadline)
        now = self.notifier.clock()
        decision = decide(
            outcome,
            attempts=out.attempts + 1,
            created_at=out.created_at,
            now=now,
            horizon=self.channel.retry_horizon,
            backoff=self.notifier.tuning.backoff,
            rng=self.notifier.rng,
        )
        # A receiver's Retry-After is about the receiver: every node of the fleet pauses.
        asked = outcome.after if isinstance(outcome, Retry) else None
        pause = decision.wait if decision.status is DeliveryStatus.PENDING and asked else None
        try:
            settled = await self.notifier.store.settle(
                out.ids,
                decision.status,
                now,
                decision.next_attempt_at,
                decision.error,
                claim=claim,
                pause=pause,
            )
        except StoreError as exc:
            # Left pending and claimed: sent again (same delivery id) once the claim ends.
            self.log.error("could not record a delivery", error=str(exc), delivery=out.delivery_id)
            await self._nap(self.notifier.tuning.error_pause, wakeable=False)
            return None
        result = {
            DeliveryStatus.SENT: "sent",
            DeliveryStatus.PENDING: "failed",
            DeliveryStatus.DEAD: "dead",
        }[decision.status]
        self.notifier.metrics.notifications.labels(channel=name, result=result).inc()
        fields = {
            "target": out.target,
            "delivery": out.delivery_id,
            "events": len(out.events),
            "attempt": out.attempts + 1,
        }
        if settled == 0 and out.ids:
            # Our claim ran out (this process stalled) and another node took the message
            # over: it records the delivery, which it sends with the same delivery id.
            self.log.warning(
                "delivery taken over by another node; this attempt is not recorded",
                result=result,
                node=self.notifier.node,
                **fields,
            )
        elif decision.status is DeliveryStatus.SENT:
            self.log.info("notification sent", **fields)
        elif decision.status is DeliveryStatus.PENDING:
            self.log.warning(
                "notification failed, will retry",
                error=decision.error,
                retry_in_s=round(decision.wait, 1),
                **fields,
            )
        else:
            self.log.error("notification dead-lettered", error=decision.error, **fields)
        return decision

    async def _nap(self, seconds: float, *, wakeable: bool, interruptible: bool = True) -> None:
        """Sleep up to `seconds`; a stop ends it, a wake when `wakeable`, `interrupt()` too."""
        deadline = self.loop.time() + seconds
        while not self._stopping and not (wakeable and self._woken):
            if interruptible and self._interrupted:
                self._interrupted = False
                return
            left = deadline - self.loop.time()
            if left <= 0:
                return
            self._poke.clear()
            try:
                async with asyncio.timeout(left):
                    await self._poke.wait()
            except TimeoutError:
                return


class NullNotifier:
    """Stands in before the store is open: accepts every call, delivers nothing."""

    @property
    def channels(self) -> dict[str, NotifyConfig]:
        """No channels."""
        return {}

    def start(self) -> None:
        """Nothing to start."""

    def wake(self) -> None:
        """Nothing to wake."""

    def outbox_written(self, channels: Iterable[str]) -> None:
        """Nothing to deliver with."""

    async def stop(self) -> None:
        """Nothing to stop."""

    def reconfigure(self, channels: Sequence[NotifyConfig], public_url: str | None) -> None:
        """Nothing to reconfigure."""

    async def send_test(self, channel: str) -> str | None:
        """Nothing can be sent."""
        return "notifications are not running"
