"""One target's scan: the probe state machine that the `Scanner` drives.

Launching, classifying, timing out and retrying the probes of one target, with its RTT
estimator and congestion window (engine.py explains the algorithm). The hot paths here are
kept flat: they run once per probe, 65535 times in a full scan.
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import errno
import ipaddress
import math
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from exposuremon.scan.ports import probe_order
from exposuremon.scan.result import Evidence, PortState, ScanResult, ScanStats
from exposuremon.scan.timing import CongestionWindow, RateLearner, RttEstimator, ScanOptions
from exposuremon.units import utcnow

_OPEN, _CLOSED, _FILTERED = int(PortState.OPEN), int(PortState.CLOSED), int(PortState.FILTERED)
_LINGER0 = struct.pack("ii", 1, 0)
_SOL_SOCKET, _SO_ERROR, _SO_LINGER = socket.SOL_SOCKET, socket.SO_ERROR, socket.SO_LINGER
_EINPROGRESS = errno.EINPROGRESS
_ECONNREFUSED = errno.ECONNREFUSED
# Local resource exhaustion: says nothing about the port; try it again later.
_RESOURCE_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL, errno.EAGAIN}
)
_NOT_RESET = frozenset({errno.EISCONN, errno.EALREADY})
# Errors only a connection that was established can have: the service accepted, then reset.
_AFTER_HANDSHAKE = frozenset({errno.ECONNRESET, errno.EPIPE})
_EPOLLOUT = select.EPOLLOUT
_SOCK_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_monotonic = time.monotonic  # the clock asyncio's loop.time() reads, without the call chain
_MAX_RESOURCE_TRIES = 50
_TICK = 0.01  # timer granularity for deadlines; timeouts are >= timeout_min (100 ms)
# The check of silent ports (engine.py): after this long without a new connection, any token
# bucket of 1/s or more holds a token again, so a port it had dropped answers.
_CHECK_GAP = 1.0
_CHECK_PORTS = 3
_CHECK = 1000  # the attempt number that marks a check probe (above any retry budget)
_LIMITED_EXTRA = 6  # more attempts per port on a rate-limited target, paced


if TYPE_CHECKING:
    from exposuremon.scan.engine import Scanner


class ScanError(Exception):
    """A scan could not start (bad or unresolvable target)."""


class TargetScan:
    """One running scan of one target; created by `Scanner.start`."""

    def __init__(
        self,
        scanner: Scanner,
        target: str,
        ports: Sequence[int],
        options: ScanOptions,
        hints: Iterable[int],
        ordered: bool = False,
        address: str | None = None,
    ) -> None:
        self._scanner = scanner
        self._loop = scanner.loop
        self.target = target
        self.address = ""
        self.options = options
        self._ports = tuple(ports)
        self._hints = tuple(hints)
        self._ordered = ordered
        self._given_address = address
        self.total = len(self._ports)
        self.done = 0
        # Up to the highest port scanned, not all 65536: a sentinel scan's table (and its
        # result's copy) is then a few hundred bytes, not 128 KB, at 333 scans a second.
        self._table = bytearray(max(self._ports, default=0) + 1)
        self._order: list[int] = []
        self._next = 0
        self._retry_q: collections.deque[tuple[int, int]] = collections.deque()
        self._spare: list[_socket.socket] = []  # sockets whose connect failed: reusable
        self._resource_tries: dict[int, int] = {}
        self._gave_up = False  # some port could not be probed at all: the scan is incomplete
        self._sockaddr_family = socket.AF_INET
        self._loopback = False
        self.inflight = 0
        # (deadline, seq, fd) in launch order. Deadlines are kept non-decreasing (a probe sent
        # after the timeout shrank waits as long as the one before it), so expiry is a FIFO.
        self._deadlines: collections.deque[tuple[float, int, int]] = collections.deque()
        self._last_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._rtt = RttEstimator(options.timeout_initial, options.timeout_min, options.timeout_max)
        self._window = CongestionWindow(options.initial_cwnd, options.concurrency)
        self._max_attempts = 1 + options.retries
        self._learner = RateLearner(options.start_rate, _monotonic())
        # Ports that timed out on every attempt: filtered, unless the check shows a rate limit.
        self._silent: list[int] = []
        # When the last unanswered attempt of a port waiting for a retry was sent: paced, a
        # retry can leave long after that attempt timed out, and the learner needs the time.
        self._unanswered_at: dict[int, float] = {}
        self._checked = False
        self._last_send = 0.0
        self._ref_port: int | None = None
        self._ref_verified = False  # the ref port answered in this scan
        self._last_answer = 0.0
        self._ping_inflight = False
        self.probes_sent = self.answered = self.timeouts = 0
        self.retries = self.loss_events = self.resource_waits = 0
        self.started = utcnow()
        # Evidence times (monotonic; reported as seconds after `started`): when the probe that
        # decided each port was sent, and for each port's first attempt the answers counted
        # so far, so that a silence is known to have overlapped answers from the target.
        self._t0 = self.started_at = _monotonic()
        # When the target last answered this scan (monotonic), for the caller to see that a
        # silent scan of the same target ran while this one was being answered.
        self.last_answered_at: float | None = None
        self._sent: dict[int, float] = {}
        self._first: dict[int, tuple[float, int]] = {}
        self._answer_sent: float | None = None  # newest answered probe's send time
        # The earliest answered probe's send time: whatever was sent before it met a target
        # (or path) that answered nothing at all, a silence no rate limit explains.
        self._first_answer_sent = math.inf
        # Silent ports (every attempt timed out) and when their last attempt was sent.
        self._silent_sent: dict[int, float] = {}
        self._reprobed = False  # silent ports sent only into a total silence were probed again
        self._live: set[int] = set()  # filtered ports during whose silence the target answered
        self._future: asyncio.Future[ScanResult] = self._loop.create_future()
        self._queued = False
        self._stopped = False
        self._task = self._loop.create_task(self._begin())

    # -- public ----------------------------------------------------------------------------

    @property
    def progress(self) -> tuple[int, int]:
        """(finished ports, total ports)."""
        return self.done, self.total

    async def wait(self) -> ScanResult:
        """Wait for the scan to finish (or be stopped) and return its result."""
        return await asyncio.shield(self._future)

    def stop(self) -> None:
        """Stop now: close every socket of this scan; the result is incomplete."""
        if not self._future.done():
            self._task.cancel()
            self._finish(complete=False)

    # -- setup -----------------------------------------------------------------------------

    async def _begin(self) -> None:
        try:
            family, address = await _resolve(self._loop, self._given_address or self.target)
        except Exception as exc:  # ScanError, or anything else: never leave wait() hanging
            if not self._future.done():
                self._scanner._forget(self)
                self._future.set_exception(
                    exc if isinstance(exc, ScanError) else ScanError(f"{self.target}: {exc}")
                )
            return
        self.address = address
        self._sockaddr_family = family
        self._loopback = ipaddress.ip_address(address).is_loopback
        self._order = (
            list(self._ports)
            if self._ordered
            else probe_order(self._ports, self._hints, self.options.shuffle_seed)
        )
        # The port for timing pings: a hint until one answers; a port that answered after.
        self._ref_port = self._hints[0] if self._hints else None
        now = _monotonic()
        self._last_answer = now
        self._tokens, self._tokens_at = 1.0, now
        self._learner = RateLearner(self.options.start_rate, now)
        if not self._order:
            self._finish(complete=True)
            return
        self.fill()

    # -- launching -------------------------------------------------------------------------

    def _wants(self) -> bool:
        return bool(self._retry_q) or self._next < len(self._order)

    def fill(self, max_new: int = 1 << 30) -> None:
        """Launch probes while the window, the rate limit and the global budget allow."""
        if not self._stopped:
            self._fill(max_new)
        # A spare socket sits in CLOSE state, which epoll reports as HUP on every wake-up:
        # whatever this fill did not reuse is closed before the loop polls again.
        if self._spare:
            self._close_spares()

    def _close_spares(self) -> None:
        """Close the spare sockets and give back the slots they held."""
        spare = self._spare
        unused = len(spare)
        while spare:
            spare.pop().close()
        self._scanner._release(unused)

    def _fill(self, max_new: int) -> None:
        scanner = self._scanner
        limit = self._window.allowed
        rate = self._pace()
        order = self._order
        while self.inflight < limit and max_new > 0 and (self._retry_q or self._next < len(order)):
            max_new -= 1
            if rate is not None and not self._take_token(rate):
                return
            if self._spare:
                pass  # a spare socket still holds its slot
            elif scanner._free > 0 and not scanner._waiting:
                scanner._free -= 1  # the uncontended fast path of _acquire
            elif not scanner._acquire(self):
                return
            if self._retry_q:
                port, attempt = self._retry_q.popleft()
            else:
                port, attempt = order[self._next], 1
                self._next += 1
            if not self._launch(port, attempt, False):
                return

    def _pace(self) -> float | None:
        """Connects per second allowed now: the configured rate and the learned pace."""
        fixed = self.options.rate
        if self._learner.rate is None:
            return fixed
        paced = self._learner.pace(_monotonic())
        if paced is None:
            return fixed
        return paced if fixed is None or paced < fixed else fixed

    def _take_token(self, rate: float) -> bool:
        now = _monotonic()
        self._tokens = min(max(1.0, rate / 10), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if self._rate_timer is None:
            delay = (1.0 - self._tokens) / rate
            self._rate_timer = self._loop.call_later(delay, self._on_rate_timer)
        return False

    def _on_rate_timer(self) -> None:
        self._rate_timer = None
        self.fill()

    def _launch(self, port: int, attempt: int, ping: bool) -> bool:
        """Start one probe; False when local resources ran out (the port is requeued)."""
        scanner = self._scanner
        if self._spare and not ping:  # a ping acquired a slot of its own
            sock = self._spare.pop()  # still registered with the epoll
        else:
            try:
                # The C socket type: the socket.socket wrapper costs ~5 µs a probe more.
                sock = _socket.socket(self._sockaddr_family, _SOCK_STREAM_NONBLOCK)
            except OSError as exc:
                scanner._release(1)
                self._resource_trouble(port, attempt, ping, exc)
                return False
            try:
                scanner._epoll.register(sock.fileno(), _EPOLLOUT)
            except OSError as exc:  # ENOSPC (max_user_watches), ENOMEM
                sock.close()
                scanner._release(1)
                self._resource_trouble(port, attempt, ping, exc)
                return False
        err = sock.connect_ex((self.address, port))
        now = self._last_send = _monotonic()
        self.probes_sent += 1
        if attempt == 1 and not ping:
            self._first[port] = (now, self.answered)
        if err == _EINPROGRESS:
            fd = sock.fileno()
            seq = scanner._seq = scanner._seq + 1
            scanner._probes[fd] = (self, sock, port, attempt, now, seq, ping)
            self.inflight += 1
            deadline = now + self._rtt.timeout
            if deadline < self._last_deadline:
                deadline = self._last_deadline
            self._last_deadline = deadline
            self._deadlines.append((deadline, seq, fd))
            if self._timer is None:
                self._arm_timer(self._deadlines[0][0])  # the earliest, not the newest
            return True
        if err in _RESOURCE_ERRNOS or err in _NOT_RESET:
            # _NOT_RESET: a reused socket the kernel did not reset. Never seen, but a wrong
            # state must not come of it: drop the socket and try the port again.
            sock.close()
            scanner._release(1)
            self._resource_trouble(port, attempt, ping, OSError(err, "connect"))
            return False
        # An immediate answer: connected, refused, or an ICMP error the kernel already knew.
        # _complete keeps the socket as a spare (holding its slot) or closes it and frees it.
        self.inflight += 1
        self._complete(sock, port, attempt, now, now, ping, err)
        return True

    def _resource_trouble(self, port: int, attempt: int, ping: bool, exc: OSError) -> None:
        self.resource_waits += 1
        if not ping:
            tries = self._resource_tries[port] = self._resource_tries.get(port, 0) + 1
            if tries > _MAX_RESOURCE_TRIES:
                # This port cannot be probed from here (e.g. no source address): it stays
                # UNKNOWN and the scan ends incomplete rather than never.
                self._gave_up = True
                self.done += 1
                if self.done == self.total:
                    self._finish(complete=False)
                return
            self._retry_q.appendleft((port, attempt))
        self._scanner._shrink_budget()
        # Nothing of ours in flight would ever call fill() again: poll for freed resources.
        if self.inflight == 0 and self._rate_timer is None:
            self._rate_timer = self._loop.call_later(0.05, self._on_rate_timer)

    # -- completion ------------------------------------------------------------------------

    def _complete(
        self,
        sock: _socket.socket,
        port: int,
        attempt: int,
        sent: float,
        now: float,
        ping: bool,
        err: int,
    ) -> None:
        """Classify a finished connect by its errno; keep the socket for reuse unless open."""
        # The hot path of the engine: kept flat, one call per probe.
        self.inflight -= 1
        if err == _ECONNREFUSED:
            state = _CLOSED
            self._spare.append(sock)
        elif err == 0 or err in _AFTER_HANDSHAKE:
            if self._loopback and _self_connected(sock):
                # On loopback a connect can meet its own ephemeral port (simultaneous open).
                state = _CLOSED
            else:
                state = _OPEN
                sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _LINGER0)  # close with an RST
            sock.close()
            self._scanner._release(1)
        else:
            state = _FILTERED
            self._spare.append(sock)
        if state != _FILTERED:
            self.answered += 1
            self._last_answer = self.last_answered_at = now
            if self._answer_sent is None or sent > self._answer_sent:
                self._answer_sent = sent
            if sent < self._first_answer_sent:
                self._first_answer_sent = sent
            if not ping:
                self._sent[port] = sent
            if self._ref_port is None or port == self._ref_port:
                self._ref_port, self._ref_verified = port, True
            self._rtt.sample(now - sent)
            self._learner.answered(sent)
            if attempt > 1:  # the first attempt went unanswered on a path that answers
                if attempt == _CHECK:
                    self._check_answered(now)
                else:
                    self._loss(self._unanswered_at.pop(port, sent - self._rtt.timeout), now)
        if ping:
            self._ping_inflight = False
        else:
            if state == _FILTERED:
                self._silenced(port)
            self._table[port] = state
            self.done += 1
        self._window.on_done()
        if self.done == self.total:
            self._at_end()

    def _loss(self, lost_sent: float, now: float, confirmed: bool = True) -> None:
        """Evidence of a lost packet on a live path: back off, and retry harder from now on."""
        self.loss_events += 1
        learner = self._learner
        was_limited = learner.limited
        self._max_attempts = max(
            self._max_attempts, 1 + self.options.retries + self.options.retries_on_loss
        )
        if lost_sent < self._first_answer_sent:
            # Nothing sent before it was answered either: the target (or the path) was silent
            # and came back, as after a reboot. A rate limit lets its first tokens through, so
            # this is no evidence of one, and pacing on it would crawl through the rest.
            return
        learner.drop(lost_sent, now, self._settle(), confirmed)
        if learner.rate is None:
            # Paced, the learned rate is the congestion control: halving the window as well
            # would cap a 100/s pace at cwnd/timeout, far below it.
            self._window.on_loss(lost_sent, now)
        if learner.limited and not was_limited:
            self._on_limited()

    def _settle(self) -> float:
        srtt = self._rtt.srtt
        return self._rtt.timeout if srtt is None else srtt

    def _on_limited(self) -> None:
        """The target limits new connections: its silent ports were dropped, not filtered."""
        options = self.options
        self._max_attempts = 1 + options.retries + options.retries_on_loss + _LIMITED_EXTRA
        silent = self._silent
        self.done -= len(silent)
        self._retry_q.extend((port, 1) for port in silent)  # a fresh budget, paced now
        silent.clear()

    def _check_answered(self, now: float) -> None:
        """A port silent on every attempt answered after a pause: a connection-rate limit."""
        was_limited = self._learner.limited
        self.loss_events += 1
        self._learner.certain(now, self._settle())
        if not was_limited:
            self._on_limited()

    def _silenced(self, port: int) -> None:
        """A port ends filtered: dated by its first attempt, live if answers came meanwhile."""
        first = self._first.get(port)
        if first is not None:
            self._sent[port] = first[0]
            if self.answered > first[1]:
                self._live.add(port)

    def _record(self, port: int, state: int) -> None:
        if state == _FILTERED:
            self._silenced(port)
        self._table[port] = state
        self.done += 1
        if self.done == self.total:
            self._at_end()

    def _at_end(self) -> None:
        """Every port has its verdict, or is silent: check the silent ones, or finish."""
        silent = self._silent
        if not silent or self._stopped:
            self._finish(complete=True)
        elif not self._reprobed and self._reprobe_dark():
            return
        elif self._checked or self.answered == 0 or self._learner.limited:
            # Nothing answered at all (down, or filtered everywhere): no limit to find.
            table = self._table
            for port in silent:
                self._silenced(port)  # evidence: dated by its first attempt (detect.py)
                table[port] = _FILTERED
            silent.clear()
            self._finish(complete=True)
        else:
            self._checked = True
            delay = _CHECK_GAP - (_monotonic() - self._last_send)
            if self._rate_timer is not None:
                self._rate_timer.cancel()
            self._rate_timer = self._loop.call_later(max(delay, 0.0), self._run_check)

    def _reprobe_dark(self) -> bool:
        """Probe again the silent ports whose every attempt went out before anything answered.

        The target was silent when they were sent and answered later (it came up mid-scan):
        their silence says nothing about them, and calling them filtered, or taking the
        answers that follow for a rate limit's, would both be wrong. Once per scan; True if
        any went back to the queue.
        """
        self._reprobed = True
        first_answer = self._first_answer_sent
        if first_answer == math.inf:
            return False  # nothing answered at all: down, or filtered everywhere
        sent_at = self._silent_sent
        dark = [port for port in self._silent if sent_at[port] < first_answer]
        if not dark:
            return False
        still = set(dark)
        self._silent[:] = [port for port in self._silent if port not in still]
        self.done -= len(dark)
        self._retry_q.extend((port, 1) for port in dark)
        self.fill()
        return True

    def _run_check(self) -> None:
        """Probe a few silent ports again after a pause in which a token bucket refills."""
        self._rate_timer = None
        if self._stopped:
            return
        picks = [self._silent.pop() for _ in range(min(_CHECK_PORTS, len(self._silent)))]
        self.done -= len(picks)
        self._retry_q.extend((port, _CHECK) for port in picks)
        self.fill()

    def _timed_out(self, port: int, attempt: int, ping: bool, sent: float, now: float) -> None:
        self.inflight -= 1
        self.timeouts += 1
        if ping:
            self._ping_inflight = False
            if self._ref_verified:
                # A port that answered in this scan went silent: loss, or a rate limit.
                self._loss(sent, now, confirmed=False)
            else:
                self._ref_port = None  # an unverified hint: silence proves nothing
            return
        self._learner.timed_out(sent)
        if attempt < self._max_attempts:
            self._unanswered_at[port] = sent
            self.retries += 1
            if self._learner.limited:
                # Behind the target's bucket, paced a little over its rate, drops fall in a
                # periodic pattern; a retry sent one timeout later could land on a drop every
                # time. At the back of the queue its turn comes at an unrelated moment.
                self._retry_q.append((port, attempt + 1))
            else:
                self._retry_q.appendleft((port, attempt + 1))
        elif self._learner.limited:
            self._unanswered_at.pop(port, None)
            if attempt == _CHECK:
                self._retry_q.append((port, 2))  # the check ended in a limit: retry it paced
            else:
                # Out of budget on a target that drops: no evidence either way, not filtered.
                self.done += 1
                if self.done == self.total:
                    self._at_end()
        else:
            self._unanswered_at.pop(port, None)  # a filtered host has thousands of these
            self._silent.append(port)
            self._silent_sent[port] = sent
            self.done += 1
            if self.done == self.total:
                self._at_end()
        self._window.on_done()

    # -- deadlines -------------------------------------------------------------------------

    def _arm_timer(self, deadline: float) -> None:
        # Deadlines are on the monotonic clock; a delay avoids assuming the loop's clock is too.
        self._timer = self._loop.call_later(max(deadline - _monotonic(), _TICK), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._stopped:
            return
        scanner = self._scanner
        probes = scanner._probes
        now = _monotonic()
        # A timeout is judged against when the loop could last look: take every answer that
        # is waiting before expiring anything. A starved loop (busy CPUs, a long callback, a
        # timer run before the I/O poll) must not turn probes answered in time into silence.
        scanner._drain()
        if self._stopped:
            return
        queue = self._deadlines
        expired = 0
        while queue and queue[0][0] <= now:
            _, seq, fd = queue.popleft()
            probe = probes.get(fd)
            if probe is None or probe[5] != seq:
                continue  # finished already
            del probes[fd]
            probe[1].close()
            expired += 1
            self._timed_out(probe[2], probe[3], probe[6], probe[4], now)
        if expired:
            scanner._release(expired)
        self._maybe_ping(now)
        if not self._future.done():
            self.fill()
        if queue and self._timer is None and not self._stopped:
            self._arm_timer(queue[0][0])

    def _maybe_ping(self, now: float) -> None:
        """Send a timing ping when probes are outstanding but nothing answered for a while."""
        if (
            self._stopped
            or self._ref_port is None
            or self._ping_inflight
            or self.inflight == 0
            or now - self._last_answer < 2 * self._rtt.timeout
            # Paced, the learner watches for drops, and a ping would spend a token of the
            # target's bucket (a 1/s limit has none to spare).
            or self._learner.rate is not None
            or (self.options.rate is not None and not self._take_token(self.options.rate))
            or not self._scanner._acquire(self)
        ):
            return
        self._ping_inflight = True
        self._last_answer = now  # one ping per quiet period
        if not self._launch(self._ref_port, 1, True):
            self._ping_inflight = False

    # -- end -------------------------------------------------------------------------------

    def _finish(self, complete: bool) -> None:
        if self._future.done():
            return
        complete = complete and not self._gave_up
        self._stopped = True
        if self._spare:
            self._close_spares()
        for handle in (self._timer, self._rate_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._rate_timer = None
        self._scanner._forget(self)
        t0 = self._t0
        result = ScanResult(
            target=self.target,
            address=self.address,
            ports=self._ports,
            started=self.started,
            finished=utcnow(),
            complete=complete,
            table=bytes(self._table),
            evidence=Evidence(
                sent={port: at - t0 for port, at in self._sent.items()},
                answered=None if self._answer_sent is None else self._answer_sent - t0,
                filtered_live=frozenset(self._live),
            ),
            stats=ScanStats(
                probes_sent=self.probes_sent,
                answered=self.answered,
                timeouts=self.timeouts,
                retries=self.retries,
                loss_events=self.loss_events,
                resource_waits=self.resource_waits,
                srtt=self._rtt.srtt,
                timeout=self._rtt.timeout,
                max_cwnd=self._window.max_seen,
                learned_rate=self._learner.learned,
                rate_limited=self._learner.limited,
                drops=self._learner.drops,
            ),
        )
        self._future.set_result(result)


def _self_connected(sock: _socket.socket) -> bool:
    try:
        return bool(sock.getsockname() == sock.getpeername())
    except OSError:
        return False


def _literal(host: str) -> tuple[socket.AddressFamily, str] | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


def _first_address(host: str, infos: list[tuple]) -> tuple[socket.AddressFamily, str]:  # type: ignore[type-arg]
    if not infos:
        raise ScanError(f"cannot resolve {host!r}: no addresses")
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def resolve_blocking(host: str) -> str:
    """Resolve a target before any event loop exists (the sharded one-shot scan)."""
    literal = _literal(host)
    if literal is not None:
        return literal[1]
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ScanError(f"cannot resolve {host!r}: {exc}") from exc
    return _first_address(host, infos)[1]


async def _resolve(loop: asyncio.AbstractEventLoop, host: str) -> tuple[socket.AddressFamily, str]:
    """Resolve at scan time (DDNS names move); literal addresses skip DNS."""
    literal = _literal(host)
    if literal is not None:
        return literal
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ScanError(f"cannot resolve {host!r}: {exc}") from exc
    return _first_address(host, infos)
