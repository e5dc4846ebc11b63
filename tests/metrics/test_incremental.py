"""The incremental state snapshot: what a long-lived collector serves equals a full re-render."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from exposuremon import detect
from exposuremon.config import Config, parse_config
from exposuremon.metrics import StateCollector
from exposuremon.model import FindingState, Observation, Observed, ScanKind, TargetState
from exposuremon.store import Store
from tests.support.records import scan_record_of

T0 = dt.datetime(2026, 11, 27, 8, 0, 0, 250000, tzinfo=dt.UTC)
PORTS = (22, 80, 443, 8080, 8443)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parsed(text: str, *, openmetrics: bool) -> Samples:
    """Every sample of an exposition, parsed by prometheus-client's own parsers."""
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    out: Samples = {}
    for family in parse(text + ("# EOF\n" if openmetrics else "")):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def config_of(names: list[str], variant: int, state_dir: Path) -> Config:
    """A config of `names`; variants drop a target, change expected ports and intervals."""
    lines = [f'[daemon]\nstate_dir = "{state_dir}"\n[schedule]\nquick = "{15 + variant}m"']
    for i, name in enumerate(names):
        if variant == 1 and i == 0:
            continue  # removed from the config, kept in the store
        expected = "443,8443" if variant == 2 else "443"
        sentinel = f'\nschedule = {{ sentinel = "{30 + i}s" }}' if variant == 3 else ""
        lines.append(
            f'[[targets]]\nname = "{name}"\naddress = "192.0.2.{i + 1}"\n'
            f'expected_open = "{expected}"{sentinel}'
        )
    return parse_config("\n".join(lines) + "\n", state_dir)


def observation(name: str, kind: ScanKind, open_ports: set[int], when: dt.datetime) -> Observation:
    """A complete scan of PORTS with `open_ports` open (none: the target did not answer)."""
    states = {p: Observed.OPEN if p in open_ports else Observed.CLOSED for p in PORTS}
    return Observation(
        target=name,
        kind=kind,
        address="192.0.2.1",
        started=when - dt.timedelta(seconds=1),
        finished=when,
        complete=True,
        states=states,
        confirmed_open=frozenset(open_ports),
        responded=bool(open_ports),
    )


# One step of a live daemon, between scrapes.
steps = st.one_of(
    st.tuples(
        st.just("apply"),
        st.integers(0, 2),
        st.sampled_from(ScanKind),
        st.frozensets(st.sampled_from(PORTS), max_size=3),
    ),
    st.tuples(st.just("touch"), st.frozensets(st.integers(0, 2), min_size=1)),
    st.tuples(st.just("ack"), st.integers(0, 2)),
    st.tuples(st.just("config"), st.integers(0, 3)),
    st.tuples(st.just("hold"), st.integers(0, 2)),
    st.tuples(
        st.just("flush"),
    ),
    st.tuples(
        st.just("scrape"),
    ),
)


def test_incremental_scrapes_equal_a_full_rerender(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """After any applies, touches, acks, held quiet scans and reloads: as a full re-render."""
    examples = itertools.count()
    state_dir = tmp_path_factory.mktemp("incremental")
    with asyncio.Runner() as runner:  # one loop: the store's connections live on it
        store = runner.run(Store.open(state_dir))

        @settings(max_examples=30, deadline=None)
        @given(st.lists(steps, min_size=1, max_size=25))
        def check(plan: list[tuple[object, ...]]) -> None:
            n = next(examples)
            names = [f"gw{n}-a", f"gw{n}-b", f"gw{n}-c"]  # fresh per example, one store for all
            clock = itertools.count(1)
            config = config_of(names, 0, state_dir)
            held: dict[str, TargetState] = {}
            incremental = StateCollector(store.gauges, lambda: config, lambda: held)

            def now() -> dt.datetime:
                return T0 + dt.timedelta(seconds=next(clock))

            async def step(op: tuple[object, ...]) -> None:
                nonlocal config, held
                kind = op[0]
                if kind == "apply":
                    _, i, scan_kind, ports = op
                    assert isinstance(i, int)
                    assert isinstance(scan_kind, ScanKind)
                    assert isinstance(ports, frozenset)
                    name, when = names[i], now()
                    prev = await store.load_state(name)
                    obs = observation(name, scan_kind, set(ports), when)
                    policy = config_of(names, 0, state_dir).targets[i].policy(config.scan)
                    out = detect.evaluate(prev, obs, policy, when)
                    await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ())
                elif kind == "touch":
                    _, which = op
                    assert isinstance(which, frozenset)
                    when = now()
                    states = [await store.load_state(names[i]) for i in sorted(which)]
                    await store.touch(
                        [
                            dataclasses.replace(
                                s,
                                last_scan={**s.last_scan, ScanKind.SENTINEL: when},
                                last_observed=when,
                            )
                            for s in states
                        ]
                    )
                elif kind == "ack":
                    _, i = op
                    assert isinstance(i, int)
                    state = await store.load_state(names[i])
                    for port, f in sorted(state.findings.items()):
                        if f.state is FindingState.OPEN:
                            when = now()
                            _, acked = detect.acknowledge(
                                state, port, when + dt.timedelta(days=1), "known", when
                            )
                            await store.save_ack(acked)
                            break
                elif kind == "config":
                    _, variant = op
                    assert isinstance(variant, int)
                    config = config_of(names, variant, state_dir)
                elif kind == "hold":
                    _, i = op
                    assert isinstance(i, int)
                    state = await store.load_state(names[i])
                    when = now()
                    held = {
                        **held,
                        names[i]: dataclasses.replace(
                            state,
                            last_scan={**state.last_scan, ScanKind.SENTINEL: when},
                            last_observed=when,
                        ),
                    }
                elif kind == "flush":
                    await store.touch(list(held.values()))
                    held = {}
                await incremental.refresh()
                full = StateCollector(store.gauges, lambda: config, lambda: held)
                await full.refresh()
                for openmetrics in (False, True):
                    ours = incremental.render(openmetrics).decode()
                    theirs = full.render(openmetrics).decode()
                    assert parsed(ours, openmetrics=openmetrics) == parsed(
                        theirs, openmetrics=openmetrics
                    )
                    assert ours == theirs

            for op in plan:
                runner.run(step(op))

        try:
            check()
        finally:
            runner.run(store.close())


async def test_concurrent_scrapes_each_read_after_the_last(tmp_path: Path) -> None:
    """Scrapes refreshing at once read one after the other and serve what a full read gives."""
    names = ["gw-a", "gw-b", "gw-c"]
    config = config_of(names, 0, tmp_path)
    async with await Store.open(tmp_path) as store:
        incremental = StateCollector(store.gauges, lambda: config)
        await incremental.refresh()
        for i, name in enumerate(names):
            when = T0 + dt.timedelta(minutes=i)
            obs = observation(name, ScanKind.QUICK, {443, 8080}, when)
            out = detect.evaluate(
                TargetState(name=name), obs, config.targets[i].policy(config.scan), when
            )
            await store.apply(scan_record_of(obs), out.state, out.events, out.findings, ())
            await asyncio.gather(*(incremental.refresh() for _ in range(3)))
        full = StateCollector(store.gauges, lambda: config)
        await full.refresh()
        ours = incremental.render(True).decode()
        assert parsed(ours, openmetrics=True) == parsed(
            full.render(True).decode(), openmetrics=True
        )
        assert 'exposuremon_port_unexpected{target="gw-c",port="8080"' in ours
