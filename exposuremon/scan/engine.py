"""Connect-scan engine: many non-blocking TCP connects in flight, adaptive and bounded.

How a probe works
    One probe is one non-blocking `connect()`. Its socket is registered with an `epoll`
    object owned by the `Scanner`; that epoll's own descriptor is watched by the asyncio
    loop as a reader, so the loop wakes once per *batch* of finished connects. We nest an epoll
    rather than calling `loop.add_writer` per socket because the loop's per-fd bookkeeping
    (a Handle, a selector key, two `epoll_ctl` calls) costs more than the connect itself:
    measured here, 25 µs CPU per probe with `add_writer` against 10 µs nested. No task,
    coroutine or timer handle exists per port.

    When epoll reports the socket, `connect()` is called on it once more: Linux answers a
    second connect on a finished attempt with its outcome (0 when the handshake completed,
    else the errno `SO_ERROR` would hold) and resets a failed socket to unconnected, so the
    same socket and its epoll registration serve the next port. A closed port thus costs two
    `connect` calls and nothing else, instead of `socket`, `connect`, `epoll_ctl`,
    `getsockopt` and `close` (about 40% less CPU; `strace -c` shows ~1000 sockets for a
    65535-port scan). A reusable socket left over after a batch is closed before the loop polls
    again, since epoll would report its CLOSE state as a hang-up on every wake-up.

    Outcome 0 means the handshake completed: **open** (the socket is then closed with
    `SO_LINGER` 0, so it ends in an RST and neither side keeps TIME_WAIT; on loopback a
    connection to itself, which a connect to its own ephemeral port makes, counts as closed).
    `ECONNREFUSED` is an RST: **closed**. ICMP unreachable / prohibited (`EHOSTUNREACH`,
    `ENETUNREACH`, `EACCES`, `EPERM` …) is **filtered** at once. No answer before the
    timeout: the socket is closed, the port retried, and after the last attempt it is
    **filtered** (after the check of silent ports below; on a rate-limited target, **unknown**).

Timeouts (per target, as in nmap / RFC 6298)
    Every answered probe gives an RTT sample `r`: `rttvar = ¾·rttvar + ¼·|srtt − r|`,
    `srtt = ⅞·srtt + ⅛·r`; the timeout is `srtt + 4·rttvar` clamped to
    `[timeout_min, timeout_max]` (`timeout_initial` until the first sample). Deadlines sit
    in a FIFO per target (kept non-decreasing) served by one timer at a 10 ms tick.

Congestion control (AIMD on a congestion window `cwnd` per target)
    `cwnd` caps the probes in flight to one target. It grows by one per finished probe in
    slow start (doubling per round trip) and by `1/cwnd` above `ssthresh`. It grows on
    *timeouts too*: a firewall that drops a port is not congestion, and treating it as such is
    why nmap takes 88 s over a filtered host. What counts as congestion is evidence that a
    probe which *should* have answered did not:

    * a retry answered where the first attempt timed out (that first attempt was lost), or
    * a timing ping timed out: while probes are outstanding and nothing has answered for a
      while, one probe goes to a port known to answer (one seen answering in this scan, or a
      hint such as an expected-open port); a live path answers it.

    On congestion `ssthresh = cwnd/2` and `cwnd = ssthresh` (at most once per round of
    probes, like TCP's recovery), and the target gets extra retries: on a lossy path a port
    that times out is retried more before it may be called filtered, so a congested path is
    not mistaken for filtering either.

Rate limits: learning the rate a target accepts (`RateLearner` in timing.py)
    Most routers protect themselves against SYN floods with a token bucket on new connections
    (OpenWrt: 25/s, burst 50; iptables guides: 1/s, burst 3): SYNs over the limit vanish. A
    window of probes sent at once then answers its first `burst` and drops the rest, and a
    dropped SYN to a closed port would read as *filtered*. The AIMD above cannot fix that: a
    bucket's rate does not depend on how many probes are in flight, only on how fast new ones
    come. So, as nmap does, the engine paces new connections to the rate the target accepts:

    * *Evidence of drops.* A retry answered where an earlier attempt timed out: a confirmed
      drop. A timing ping unanswered is no such evidence (loss, or a target that just went
      down, explain it as well) and never starts pacing.
    * *Recognising a bucket.* On a drop, look at the probes sent since the last change of pace
      (at most the last 10 s unpaced, or 20 paced sends) whose fate is known: if fewer than
      half were answered (unpaced), or fewer than 85% (paced), new connections are being
      refused by rate, and the rate the target accepted is (answered + 1) / span. Random loss
      drops a few percent of what is sent and never gets there; a bucket drops most of a burst.
    * *Pacing.* New probes and retries leave at that rate (a token bucket of our own, the same
      one `rate` uses; the lower of the two wins). Timing pings stop, as they would spend the
      target's tokens. Paced, the AIMD window no longer halves on drops: the pace is the
      congestion control, and a halved window would cap it at `cwnd / timeout`.
    * *Probing upward.* After a quiet period (no drop of a probe sent at the current pace for
      20 sends, at least 1 s) the pace grows by 1.25x, more each quiet period in a row (up to
      2x): a limit that was lifted, or a lossy path taken for one, is left behind in seconds;
      above 50 000/s pacing stops. Drops of probes sent before a change never count against
      the new pace: they are what that change reacted to.
    * *A target counts as rate-limited* (`ScanStats.rate_limited`) after three confirmed drops
      while paced, or when the *check* finds one: ports that timed out on every attempt are not
      called filtered at once. When nothing else is left, and the target answered anything,
      the scan pauses 1 s (from its last SYN, so a bucket of 1/s or more holds a token again)
      and probes up to three of them once more. An answer proves the drops, and pacing starts
      from the rate seen so far; silence makes them all filtered (a pause of at most a second
      on a scan of a host that drops ports, and none when every port answered).
    * *Certainty.* On a rate-limited target the silent ports go back to the queue with a fresh
      budget of `1 + retries + retries_on_loss + 6` attempts, paced, each retry at the back
      of the queue (a retry one timeout after its drop could meet the bucket's periodic drop
      pattern every time). A port that answers has its state (RST is closed however many
      SYNs were dropped first); a port still silent at the end of its budget is UNKNOWN,
      never filtered: on a target that drops, silence is no evidence.
    * *Between scans.* `ScanStats.learned_rate` is the accepted rate the evidence supports; a
      caller passes it to the next scan of the target as `ScanOptions.start_rate`, which then
      starts paced (and keeps learning, upward too). A sentinel of 60 ports at a known 25/s
      thus takes 2.4 s and sends no burst the bucket would drop.

Bounds and fairness
    Per target at most `concurrency` probes (the pool per WAN IP) and optionally `rate`
    connects per second (a token bucket). Globally at most `max_sockets` probes, derived from
    RLIMIT_NOFILE (soft limit raised to the hard one). When the global budget is exhausted,
    targets queue for slots and are served round-robin one slot at a time, so a 65535-port scan
    cannot starve a 60-port sentinel scan. Running out of descriptors or ephemeral ports
    (EMFILE, EADDRNOTAVAIL …) shrinks the budget and requeues the port: never a crash, never a
    wrong state.

Cancellation
    `TargetScan.stop` (or cancelling the task awaiting `Scanner.scan`) closes every socket
    of that scan at once and yields a result with `complete=False` in which the unfinished
    ports are UNKNOWN.
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import errno
import resource
import select
import time
from collections.abc import Iterable, Sequence

from exposuremon.scan.result import ScanResult
from exposuremon.scan.target import TargetScan
from exposuremon.scan.timing import ScanOptions

_NOT_YET = frozenset({errno.EALREADY, errno.EINPROGRESS})
_monotonic = time.monotonic
_BATCH = 4096  # events taken from the epoll per loop wake-up


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


class Scanner:
    """Owns the sockets in flight for all scans: one epoll, one global budget, fair sharing."""

    def __init__(self, max_sockets: int | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.max_sockets = (
            max_sockets if max_sockets is not None else socket_budget(raise_nofile_limit())
        )
        self._budget = self.max_sockets
        # A slot is a descriptor: a probe in flight, or a scan's spare socket kept for its next
        # probe. Counting only probes let spares push the process past its descriptor limit.
        self._free = self._budget
        self._handing_out = False
        self._epoll = select.epoll()
        self._probes: dict[int, tuple[TargetScan, _socket.socket, int, int, float, int, bool]] = {}
        self._seq = 0
        self._waiting: collections.deque[TargetScan] = collections.deque()
        self._active: set[TargetScan] = set()
        self._serving: TargetScan | None = None
        self._reading = False
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Sockets held across all scans: probes in flight and spares kept for reuse."""
        return self._budget - self._free

    def start(
        self,
        target: str,
        ports: Sequence[int],
        options: ScanOptions | None = None,
        hints: Iterable[int] = (),
        *,
        ordered: bool = False,
        address: str | None = None,
    ) -> TargetScan:
        """Begin scanning; `hints` are ports likely to answer (expected open, seen open).

        `ordered`: probe `ports` in the order given instead of `probe_order`'s.
        `address`: scan this address (already resolved) and report `target` as the name.
        """
        if self._closed:
            raise RuntimeError("scanner is closed")
        scan = TargetScan(self, target, ports, options or ScanOptions(), hints, ordered, address)
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
        *,
        address: str | None = None,
    ) -> ScanResult:
        """Scan and wait; if the caller is cancelled, every socket of the scan is closed."""
        scan = self.start(target, ports, options, hints, address=address)
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

    # -- internal, used by TargetScan --------------------------------------------------------------

    def _acquire(self, scan: TargetScan) -> bool:
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
        if self._handing_out:
            # Freed while handing slots out (a probe that failed or answered at once, a scan
            # that ended): the loop below hands it on. Recursing instead went one scan deeper
            # per failed launch, and out of descriptors with a thousand scans waiting, that
            # was a RecursionError in the middle of the engine.
            return
        self._handing_out = True
        try:
            self._hand_out()
        finally:
            self._handing_out = False

    def _hand_out(self) -> None:
        # Hand freed slots round-robin to scans that queued for them, one slot per turn.
        waiting = self._waiting
        while self._free > 0 and waiting:
            scan = waiting.popleft()
            scan._queued = False
            if scan._stopped:
                continue
            sent = scan.probes_sent
            self._serving = scan
            try:
                scan.fill(max_new=1)
            finally:
                self._serving = None
            # Requeue whenever it launched, even a probe that answered at once and gave its
            # slot straight back: nothing of it may be in flight to call fill() again.
            if (
                scan.probes_sent > sent
                and not scan._queued
                and scan._wants()
                and scan.inflight < scan._window.allowed
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

    def _forget(self, scan: TargetScan) -> None:
        """Close a finished or stopped scan's sockets and give back its slots."""
        scan._stopped = True
        self._active.discard(scan)
        if scan._queued:
            scan._queued = False
            self._waiting.remove(scan)
        # A scan that finished has nothing in flight: looking through every probe of every
        # other scan for none of its own cost 2% of a 10,000-target daemon.
        mine = (
            [fd for fd, probe in self._probes.items() if probe[0] is scan] if scan.inflight else []
        )
        for fd in mine:
            probe = self._probes.pop(fd)
            probe[1].close()
        scan.inflight -= len(mine)
        if mine:
            self._release(len(mine))
        if not self._active and self._reading and not self._closed:
            self.loop.remove_reader(self._epoll.fileno())
            self._reading = False

    def _drain(self) -> None:
        """Take every finished connect now (before a scan judges its timeouts)."""
        for _ in range(1 + self.max_sockets // _BATCH):  # at most every socket in flight
            if self._on_ready() < _BATCH:
                return

    def _on_ready(self) -> int:
        """Handle one batch of finished connects; return how many epoll reported."""
        probes = self._probes
        now = _monotonic()
        touched: set[TargetScan] = set()
        events = self._epoll.poll(0, _BATCH)
        for fd, _ev in events:
            probe = probes.pop(fd, None)
            if probe is None:
                continue
            scan, sock, port, attempt, sent, _seq, ping = probe
            # connect() again on a socket whose handshake ended returns how it ended (0, or
            # the errno that SO_ERROR would give) and resets a failed socket for reuse.
            err = sock.connect_ex((scan.address, port))
            if err in _NOT_YET:
                probes[fd] = probe  # woken early: still connecting
                continue
            scan._complete(sock, port, attempt, sent, now, ping, err)
            touched.add(scan)
        # Slots come back as sockets close: an open port's in _complete, the spares a scan
        # does not reuse at the end of its fill.
        for scan in touched:
            scan.fill()
        return len(events)
