"""Connect-scan engine: many non-blocking TCP connects in flight, adaptive and bounded.

How a probe works
    One probe is one non-blocking ``connect()``. Its socket is registered with an ``epoll``
    object owned by the :class:`Scanner`; that epoll's own descriptor is watched by the asyncio
    loop as a reader, so the loop wakes once per *batch* of finished connects. We nest an epoll
    rather than calling ``loop.add_writer`` per socket because the loop's per-fd bookkeeping
    (a Handle, a selector key, two ``epoll_ctl`` calls) costs more than the connect itself:
    measured here, 25 µs CPU per probe with ``add_writer`` against 10 µs nested. Closing a
    socket drops it from the epoll, so a probe costs ``socket``, ``connect``, one ``epoll_ctl``,
    ``getsockopt`` and ``close``. No task or coroutine exists per port.

    ``SO_ERROR`` 0 means the handshake completed: **open** (the socket is closed with
    ``SO_LINGER`` 0, so it ends in an RST and neither side keeps TIME_WAIT). ``ECONNREFUSED``
    is an RST: **closed**. ICMP unreachable / prohibited (``EHOSTUNREACH``, ``ENETUNREACH``,
    ``EACCES``, ``EPERM`` …) is **filtered** at once. No answer before the timeout: the port is
    retried, and after the last attempt it is **filtered**.

Timeouts (per target, as in nmap / RFC 6298)
    Every answered probe gives an RTT sample ``r``: ``rttvar = ¾·rttvar + ¼·|srtt − r|``,
    ``srtt = ⅞·srtt + ⅛·r``; the timeout is ``srtt + 4·rttvar`` clamped to
    ``[timeout_min, timeout_max]`` (``timeout_initial`` until the first sample). Deadlines sit
    in a heap per target served by one timer at a coarse tick, not a timer per probe.

Congestion control (AIMD on a congestion window ``cwnd`` per target)
    ``cwnd`` caps the probes in flight to one target. It grows by one per finished probe in
    slow start (doubling per round trip) and by ``1/cwnd`` above ``ssthresh``. It grows on
    *timeouts too*: a firewall that drops a port is not congestion, and treating it as such is
    why nmap takes 88 s over a filtered host. What counts as congestion is evidence that a
    probe which *should* have answered did not:

    * a retry answered where the first attempt timed out (that first attempt was lost), or
    * a timing ping timed out: while probes are outstanding and nothing has answered for a
      while, one probe goes to a port known to answer (one seen answering in this scan, or a
      hint such as an expected-open port); a live path answers it.

    On congestion ``ssthresh = cwnd/2`` and ``cwnd = ssthresh`` (at most once per round of
    probes, like TCP's recovery), and the target gets extra retries: on a lossy path a port
    that times out is retried more before it may be called filtered, so a congested path is
    not mistaken for filtering either.

Bounds and fairness
    Per target at most ``concurrency`` probes (the pool per WAN IP) and optionally ``rate``
    connects per second (a token bucket). Globally at most ``max_sockets`` probes, derived from
    RLIMIT_NOFILE (soft limit raised to the hard one). When the global budget is exhausted,
    targets queue for slots and are served round-robin one slot at a time, so a 65535-port scan
    cannot starve a 60-port sentinel scan. Running out of descriptors or ephemeral ports
    (EMFILE, EADDRNOTAVAIL …) shrinks the budget and requeues the port: never a crash, never a
    wrong state.

Cancellation
    :meth:`Scan.stop` (or cancelling the task awaiting :meth:`Scanner.scan`) closes every socket
    of that scan at once and yields a result with ``complete=False`` in which the unfinished
    ports are UNKNOWN.
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import dataclasses
import datetime as dt
import errno
import heapq
import ipaddress
import resource
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence

from exposuremon.scan.ports import TOP1000_PORTS
from exposuremon.scan.result import PortState, ScanResult, ScanStats

_OPEN, _CLOSED, _FILTERED = int(PortState.OPEN), int(PortState.CLOSED), int(PortState.FILTERED)
_LINGER0 = struct.pack("ii", 1, 0)
_SOL_SOCKET, _SO_ERROR, _SO_LINGER = socket.SOL_SOCKET, socket.SO_ERROR, socket.SO_LINGER
_EINPROGRESS = errno.EINPROGRESS
_ECONNREFUSED = errno.ECONNREFUSED
# Local resource exhaustion: says nothing about the port; try it again later.
_RESOURCE_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL, errno.EAGAIN}
)
_EPOLLOUT = select.EPOLLOUT
_SOCK_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_monotonic = time.monotonic  # the clock asyncio's loop.time() reads, without the call chain
_TICK = 0.01  # timer granularity for deadlines; timeouts are >= timeout_min (100 ms)
_BATCH = 4096
_EXTRA_RETRIES_ON_LOSS = 2
_MIN_CWND = 4.0


class ScanError(Exception):
    """A scan could not start (bad or unresolvable target)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScanOptions:
    """Tuning of one scan; defaults are safe for a router on the internet."""

    concurrency: int = 1024
    initial_cwnd: int = 64
    timeout_initial: float = 0.5
    timeout_min: float = 0.1
    timeout_max: float = 1.25
    retries: int = 1
    rate: float | None = None
    shuffle_seed: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")
        if not 0 < self.timeout_min <= self.timeout_max:
            raise ValueError("need 0 < timeout_min <= timeout_max")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def socket_budget(nofile: int) -> int:
    """Probes allowed in flight for a descriptor limit, keeping a reserve for everything else."""
    reserve = min(256, max(48, nofile // 8))
    return max(8, nofile - reserve)


def probe_order(
    ports: Iterable[int], first: Iterable[int] = (), seed: int | None = None
) -> list[int]:
    """Order ports for scanning: hints first, then common ports, then the rest, each spread out.

    Common ports first gives RTT samples early; spreading them (an affine permutation) keeps a
    router's per-range rules and rate limits from seeing a sequential sweep.
    """
    wanted = set(ports)
    head = [p for p in dict.fromkeys(first) if p in wanted]
    seen = set(head)
    common = sorted(p for p in wanted if p in TOP1000_PORTS and p not in seen)
    rest = sorted(p for p in wanted if p not in TOP1000_PORTS and p not in seen)
    return head + _spread(common, seed) + _spread(rest, seed)


def _spread(items: list[int], seed: int | None) -> list[int]:
    n = len(items)
    if n < 3:
        return items
    step = (seed or 0) % n + n // 2 + 1
    while _gcd(step, n) != 1:
        step += 1
    offset = (seed or 0) % n
    return [items[(offset + i * step) % n] for i in range(n)]


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Scan:
    """One running scan of one target; created by :meth:`Scanner.start`."""

    def __init__(
        self,
        scanner: Scanner,
        target: str,
        ports: Sequence[int],
        options: ScanOptions,
        hints: Iterable[int],
    ) -> None:
        self._scanner = scanner
        self._loop = scanner.loop
        self.target = target
        self.address = ""
        self.options = options
        self._ports = tuple(ports)
        self._hints = tuple(hints)
        self.total = len(self._ports)
        self.done = 0
        self._table = bytearray(65536)
        self._order: list[int] = []
        self._next = 0
        self._retry_q: collections.deque[tuple[int, int]] = collections.deque()
        self._sockaddr_family = socket.AF_INET
        self._loopback = False
        self.inflight = 0
        self._deadlines: list[tuple[float, int, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._rate_timer: asyncio.TimerHandle | None = None
        self._tokens = 0.0
        self._tokens_at = 0.0
        # RTT estimation and congestion state
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.timeout = options.timeout_initial
        self.cwnd = float(min(options.initial_cwnd, options.concurrency))
        self._ssthresh = float(options.concurrency)
        self._max_attempts = 1 + options.retries
        self._recover_at = 0.0  # a loss of a probe sent before this is the same event
        self._concurrency = float(options.concurrency)
        self._ref_port: int | None = None
        self._last_answer = 0.0
        self._ping_inflight = False
        self.probes_sent = self.answered = self.timeouts = 0
        self.retries = self.loss_events = self.resource_waits = 0
        self._max_cwnd = int(self.cwnd)
        self.started = _utcnow()
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
            family, address = await _resolve(self._loop, self.target)
        except ScanError as exc:
            if not self._future.done():
                self._scanner._forget(self)
                self._future.set_exception(exc)
            return
        self.address = address
        self._sockaddr_family = family
        self._loopback = ipaddress.ip_address(address).is_loopback
        self._order = probe_order(self._ports, self._hints, self.options.shuffle_seed)
        self._ref_port = self._hints[0] if self._hints else None
        now = _monotonic()
        self._last_answer = now
        self._tokens, self._tokens_at = 1.0, now
        if not self._order:
            self._finish(complete=True)
            return
        self.fill()

    # -- launching -------------------------------------------------------------------------

    def _wants(self) -> bool:
        return bool(self._retry_q) or self._next < len(self._order)

    def fill(self, max_new: int = 1 << 30) -> None:
        """Launch probes while the window, the rate limit and the global budget allow."""
        if self._stopped:
            return
        scanner = self._scanner
        limit = int(self.cwnd)
        rate = self.options.rate
        order = self._order
        while self.inflight < limit and max_new > 0 and (self._retry_q or self._next < len(order)):
            max_new -= 1
            if rate is not None and not self._take_token(rate):
                return
            if not scanner._acquire(self):
                return
            if self._retry_q:
                port, attempt = self._retry_q.popleft()
            else:
                port, attempt = order[self._next], 1
                self._next += 1
            if not self._launch(port, attempt, ping=False):
                return

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
        try:
            # The C socket type: the socket.socket wrapper's __init__/close cost ~5 µs a probe.
            sock = _socket.socket(self._sockaddr_family, _SOCK_STREAM_NONBLOCK)
        except OSError as exc:
            scanner._release(1)
            self._resource_trouble(port, attempt, ping, exc)
            return False
        err = sock.connect_ex((self.address, port))
        now = _monotonic()
        self.probes_sent += 1
        if err == _EINPROGRESS:
            fd = sock.fileno()
            seq = scanner._seq = scanner._seq + 1
            scanner._probes[fd] = (self, sock, port, attempt, now, seq, ping)
            scanner._epoll.register(fd, _EPOLLOUT)
            self.inflight += 1
            deadline = now + self.timeout
            heapq.heappush(self._deadlines, (deadline, seq, fd))
            if self._timer is None:
                self._arm_timer(deadline)
            return True
        scanner._release(1)
        if err in _RESOURCE_ERRNOS:
            sock.close()
            self._resource_trouble(port, attempt, ping, OSError(err, "connect"))
            return False
        # An immediate answer: connected, refused, or an ICMP error the kernel already knew.
        self.inflight += 1
        self._complete(sock, port, attempt, now, now, ping, err)
        return True

    def _resource_trouble(self, port: int, attempt: int, ping: bool, exc: OSError) -> None:
        self.resource_waits += 1
        if not ping:
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
        """Classify a finished connect (err = SO_ERROR or connect's immediate errno)."""
        # The hot path of the engine: kept flat, one call per probe.
        self.inflight -= 1
        if err == _ECONNREFUSED:
            state = _CLOSED
        elif err == 0:
            if self._loopback and _self_connected(sock):
                # On loopback a connect can meet its own ephemeral port (simultaneous open).
                state = _CLOSED
            else:
                state = _OPEN
                sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _LINGER0)
        else:
            state = _FILTERED
        sock.close()
        if state != _FILTERED:
            self.answered += 1
            self._last_answer = now
            if self._ref_port is None:
                self._ref_port = port
            r = now - sent
            srtt = self._srtt
            if srtt is None:
                self._srtt, self._rttvar = r, r / 2
            else:
                self._rttvar += (abs(srtt - r) - self._rttvar) * 0.25
                self._srtt = srtt = srtt + (r - srtt) * 0.125
                timeout = srtt + 4 * self._rttvar
                o = self.options
                self.timeout = (
                    o.timeout_min
                    if timeout < o.timeout_min
                    else (o.timeout_max if timeout > o.timeout_max else timeout)
                )
            if attempt > 1:
                self._loss(sent - self.timeout, now)
        if ping:
            self._ping_inflight = False
        else:
            self._table[port] = state
            self.done += 1
        cwnd = self.cwnd
        if cwnd < self._concurrency:
            cwnd += 1.0 if cwnd < self._ssthresh else 1.0 / cwnd
            self.cwnd = cwnd
            if cwnd > self._max_cwnd:
                self._max_cwnd = int(cwnd)
        if self.done == self.total:
            self._finish(complete=True)

    def _grow(self) -> None:
        cwnd = self.cwnd
        cwnd += 1.0 if cwnd < self._ssthresh else 1.0 / cwnd
        self.cwnd = cwnd = min(cwnd, self._concurrency)
        if cwnd > self._max_cwnd:
            self._max_cwnd = int(cwnd)

    def _loss(self, lost_sent: float, now: float) -> None:
        """Evidence of a lost packet on a live path: multiplicative decrease, once per round."""
        self.loss_events += 1
        self._max_attempts = 1 + self.options.retries + _EXTRA_RETRIES_ON_LOSS
        if lost_sent < self._recover_at:
            return  # sent before the last decrease: part of the same congestion event
        self._ssthresh = max(_MIN_CWND, self.cwnd / 2)
        self.cwnd = self._ssthresh
        self._recover_at = now

    def _record(self, port: int, state: int) -> None:
        self._table[port] = state
        self.done += 1
        if self.done == self.total:
            self._finish(complete=True)

    def _timed_out(self, port: int, attempt: int, ping: bool, sent: float, now: float) -> None:
        self.inflight -= 1
        self.timeouts += 1
        if ping:
            self._ping_inflight = False
            self._loss(sent, now)
            return
        if attempt < self._max_attempts:
            self.retries += 1
            self._retry_q.appendleft((port, attempt + 1))
        else:
            self._record(port, _FILTERED)
        self._grow()

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
        heap = self._deadlines
        expired = 0
        while heap and heap[0][0] <= now:
            _, seq, fd = heapq.heappop(heap)
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
        if heap and self._timer is None and not self._stopped:
            self._arm_timer(heap[0][0])

    def _maybe_ping(self, now: float) -> None:
        """Send a timing ping when probes are outstanding but nothing answered for a while."""
        if (
            self._ref_port is None
            or self._ping_inflight
            or self.inflight == 0
            or now - self._last_answer < 2 * self.timeout
            or not self._scanner._acquire(self)
        ):
            return
        self._ping_inflight = True
        self._last_answer = now  # one ping per quiet period
        if not self._launch(self._ref_port, 1, ping=True):
            self._ping_inflight = False

    # -- end -------------------------------------------------------------------------------

    def _finish(self, complete: bool) -> None:
        if self._future.done():
            return
        self._stopped = True
        for handle in (self._timer, self._rate_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._rate_timer = None
        self._scanner._forget(self)
        result = ScanResult(
            target=self.target,
            address=self.address,
            ports=self._ports,
            started=self.started,
            finished=_utcnow(),
            complete=complete,
            table=bytes(self._table),
            stats=ScanStats(
                probes_sent=self.probes_sent,
                answered=self.answered,
                timeouts=self.timeouts,
                retries=self.retries,
                loss_events=self.loss_events,
                resource_waits=self.resource_waits,
                srtt=self._srtt,
                timeout=self.timeout,
                max_cwnd=self._max_cwnd,
            ),
        )
        self._future.set_result(result)


def _self_connected(sock: _socket.socket) -> bool:
    try:
        return bool(sock.getsockname() == sock.getpeername())
    except OSError:
        return False


async def _resolve(loop: asyncio.AbstractEventLoop, host: str) -> tuple[socket.AddressFamily, str]:
    """Resolve at scan time (DDNS names move); literal addresses skip DNS."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)
    except ValueError:
        pass
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ScanError(f"cannot resolve {host!r}: {exc}") from exc
    if not infos:
        raise ScanError(f"cannot resolve {host!r}: no addresses")
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


class Scanner:
    """Owns the sockets in flight for all scans: one epoll, one global budget, fair sharing."""

    def __init__(self, max_sockets: int | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_sockets = (
            max_sockets if max_sockets is not None else socket_budget(raise_nofile_limit())
        )
        self._budget = self.max_sockets
        self._free = self._budget
        self._epoll = select.epoll()
        self._probes: dict[int, tuple[Scan, _socket.socket, int, int, float, int, bool]] = {}
        self._seq = 0
        self._waiting: collections.deque[Scan] = collections.deque()
        self._active: set[Scan] = set()
        self._serving: Scan | None = None
        self._reading = False
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Probes currently in flight across all scans."""
        return self._budget - self._free

    def start(
        self,
        target: str,
        ports: Sequence[int],
        options: ScanOptions | None = None,
        hints: Iterable[int] = (),
    ) -> Scan:
        """Begin scanning; ``hints`` are ports likely to answer (expected open, seen open)."""
        if self._closed:
            raise RuntimeError("scanner is closed")
        scan = Scan(self, target, ports, options or ScanOptions(), hints)
        self._active.add(scan)
        if not self._reading:
            self.loop.add_reader(self._epoll.fileno(), self._on_ready)
            self._reading = True
        return scan

    async def scan(
        self,
        target: str,
        ports: Sequence[int],
        options: ScanOptions | None = None,
        hints: Iterable[int] = (),
    ) -> ScanResult:
        """Scan and wait; if the caller is cancelled, every socket of the scan is closed."""
        scan = self.start(target, ports, options, hints)
        try:
            return await scan.wait()
        except asyncio.CancelledError:
            scan.stop()
            raise

    def close(self) -> None:
        """Stop every scan and release the epoll."""
        for scan in list(self._active):
            scan.stop()
        if self._reading:
            self.loop.remove_reader(self._epoll.fileno())
            self._reading = False
        self._closed = True
        self._epoll.close()

    # -- internal, used by Scan --------------------------------------------------------------

    def _acquire(self, scan: Scan) -> bool:
        waiting = self._waiting
        if self._free > 0 and (not waiting or self._serving is scan):
            self._free -= 1
            return True
        if not scan._queued:
            scan._queued = True
            waiting.append(scan)
        return False

    def _release(self, n: int) -> None:
        self._free += n
        # Hand freed slots round-robin to scans that queued for them, one slot per turn.
        waiting = self._waiting
        while self._free > 0 and waiting:
            scan = waiting.popleft()
            scan._queued = False
            if scan._stopped:
                continue
            before = self._free
            self._serving = scan
            try:
                scan.fill(max_new=1)
            finally:
                self._serving = None
            if (
                self._free < before
                and not scan._queued
                and scan._wants()
                and scan.inflight < int(scan.cwnd)
            ):
                scan._queued = True
                waiting.append(scan)

    def _shrink_budget(self) -> None:
        """Out of descriptors or ports: lower the budget to what is in flight now."""
        in_flight = self._budget - self._free
        new_budget = max(8, in_flight - 8)
        if new_budget < self._budget:
            self._free -= self._budget - new_budget
            self._budget = new_budget

    def _forget(self, scan: Scan) -> None:
        """Close a finished or stopped scan's sockets and give back its slots."""
        scan._stopped = True
        self._active.discard(scan)
        if scan._queued:
            scan._queued = False
            self._waiting.remove(scan)
        mine = [fd for fd, probe in self._probes.items() if probe[0] is scan]
        for fd in mine:
            probe = self._probes.pop(fd)
            probe[1].close()
        scan.inflight -= len(mine)
        if mine:
            self._release(len(mine))
        if not self._active and self._reading and not self._closed:
            self.loop.remove_reader(self._epoll.fileno())
            self._reading = False

    def _on_ready(self) -> None:
        probes = self._probes
        now = _monotonic()
        touched: set[Scan] = set()
        finished = 0
        for fd, _ev in self._epoll.poll(0, _BATCH):
            probe = probes.pop(fd, None)
            if probe is None:
                continue
            scan, sock, port, attempt, sent, _seq, ping = probe
            err = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            finished += 1
            scan._complete(sock, port, attempt, sent, now, ping, err)
            touched.add(scan)
        if finished:
            self._release(finished)
        for scan in touched:
            scan.fill()
