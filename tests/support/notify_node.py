"""One notification node of a fleet test, in its own process: a `Notifier` on a shared store.

    python -m tests.support.notify_node STORE_URL NODE SPEC_JSON

SPEC_JSON holds `channels` (the `[[notify]]` tables) and `tuning` (`Tuning`'s fields, `backoff`
as `Backoff`'s). It logs JSON lines to stderr, prints `started NODE` on stdout once its notifier
runs, and stops on SIGTERM (a test's `kill -9` is the node dying).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import aiohttp

from exposuremon.config.models import NotifyConfig
from exposuremon.logs import configure_logging
from exposuremon.metrics.collectors import Metrics
from exposuremon.notify.notifier import Notifier, Tuning
from exposuremon.notify.retry import Backoff
from exposuremon.store.database import Store


def tuning_of(spec: dict[str, Any]) -> Tuning:
    """`Tuning` from its fields as JSON."""
    fields = dict(spec)
    backoff = dict(fields.pop("backoff", {}))
    if "retry_after" in backoff:
        backoff["retry_after"] = tuple(backoff["retry_after"])
    return Tuning(backoff=Backoff(**backoff), **fields)


async def run(url: str, node: str, spec: dict[str, Any]) -> None:
    """Deliver until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    channels = [NotifyConfig.model_validate(c) for c in spec["channels"]]
    store = await Store.open(url)
    try:
        async with aiohttp.ClientSession() as session:
            notifier = Notifier(
                store, channels, session, Metrics(), tuning=tuning_of(spec["tuning"]), node=node
            )
            notifier.start()
            print(f"started {node}", flush=True)
            await stop.wait()
            await notifier.stop()
    finally:
        await store.close()


def main() -> None:
    """Entry point: STORE_URL NODE SPEC_JSON."""
    url, node, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    configure_logging("json", "info", stream=sys.stderr)
    asyncio.run(run(url, node, spec))


if __name__ == "__main__":
    main()
