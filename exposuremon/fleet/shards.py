"""Which shard a target belongs to: the same answer in every process, version and machine."""

from __future__ import annotations

import hashlib


def shard_of(target: str, shards: int) -> int:
    """The shard (0 to shards-1) of the target called `target`.

    BLAKE2b of the name's UTF-8 bytes, never Python's `hash` (salted per process): every
    node of a fleet, of any version, must put a target in the same shard.
    """
    if shards < 1:
        raise ValueError(f"shards: {shards} (needs at least 1)")
    digest = hashlib.blake2b(target.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
