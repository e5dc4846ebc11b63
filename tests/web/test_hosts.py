"""DNS rebinding: only Host names of this server are served (web/hosts.py), over raw sockets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from exposuremon.config import check_warnings
from exposuremon.config.models import HttpConfig
from exposuremon.web.hosts import HostPolicy, host_name
from tests.support.apibed import Story, build_story
from tests.support.rawhttp import exchange, request, serving

PATHS = ["/api/v1/targets", "/api/v1/findings", "/", "/metrics", "/readyz", "/api/v1/nowhere"]
FORGED = [
    "attacker.example",
    "attacker.example:9810",
    "ATTACKER.Example.",
    "localhost.attacker.example",
    "127.0.0.1.attacker.example",
    "127.0.0.2",
    "192.0.2.1:9810",
    "[::2]",
    "[::ffff:192.0.2.1]",
    "xn--bcher-kva.example",
]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """The API story store, built once; tests serve copies."""
    return build_story(tmp_path_factory.mktemp("story"))


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost.", "localhost"),
        ("localhost:9810", "localhost"),
        ("localhost.:9810", "localhost"),
        ("localhost:", "localhost"),
        ("127.0.0.1:9810", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:9810", "::1"),
        ("[0:0::1]:1", "::1"),
        ("Mon.Example.NET", "mon.example.net"),
        ("", None),
        ("localhost:98x", None),
        ("localhost:123456", None),
        ("::1", None),
        ("[::1", None),
        ("[::1]x", None),
        ("[127.0.0.1]", None),
        ("user@localhost", None),
        ("localhost/x", None),
        ("a b", None),
        ("a..b", None),
        (".", None),
        ("b\u00fccher.example", None),
    ],
)
def test_host_name_normalises(value: str, name: str | None) -> None:
    """Host values lose case, port and trailing dot; malformed ones are None."""
    assert host_name(value) == name


def test_policy_names_come_from_listen_public_url_and_allowed_hosts() -> None:
    """The implied names: listen's host (not a wildcard), public_url's host, allowed_hosts."""
    http = HttpConfig(
        listen="192.0.2.5:9810",
        public_url="https://Mon.Example.net./status",
        allowed_hosts=("prom.lan",),
    )
    assert HostPolicy.of(http).names == {"192.0.2.5", "mon.example.net", "prom.lan"}
    assert HostPolicy.of(HttpConfig(listen="0.0.0.0:9810")).names == frozenset()
    assert HostPolicy.of(HttpConfig(listen="[::]:9810")).names == frozenset()
    assert HostPolicy.of(HttpConfig(listen="[0::1]:9810")).names == {"::1"}
    policy = HostPolicy.of(HttpConfig(listen="0.0.0.0:9810"))
    assert policy.allows("198.51.100.3", "198.51.100.3")  # the address the client reached
    assert not policy.allows("localhost", "198.51.100.3")  # localhost only over loopback
    assert policy.allows("localhost", "127.0.0.1")
    assert not policy.allows("attacker.example", "127.0.0.1")


async def test_forged_host_is_refused_with_json(story: Story, tmp_path: Path) -> None:
    """Any Host that is not a name of this server gets 421 JSON, on every path but /healthz."""
    async with serving(story.copy(tmp_path)) as (server, _):
        assert server.bound is not None
        for forged in FORGED:
            for path in PATHS:
                answer = await exchange(server.bound, request(path, forged))
                assert answer.status == 421, (forged, path, answer)
                assert "not a name of this server" in answer.json()["error"]
                assert b"office" not in answer.body
            answer = await exchange(server.bound, request("/healthz", forged))
            assert answer.status == 200, (forged, answer)
            assert answer.json() == {"status": "ok"}


async def test_own_names_are_served_in_every_spelling(story: Story, tmp_path: Path) -> None:
    """Loopback names, public_url's and allowed_hosts' names are served with any case,
    trailing dot and port."""
    bed = story.copy(
        tmp_path,
        http='public_url = "https://mon.example.net/x"\nallowed_hosts = ["Prom.LAN."]',
    )
    own = [
        "localhost",
        "LOCALHOST.",
        "localhost:1",
        "localhost.:9810",
        "127.0.0.1",
        "127.0.0.1:9810",
        "[::1]:9810",
        "mon.example.net",
        "MON.example.NET.:443",
        "prom.lan",
        "prom.lan.:9810",
    ]
    async with serving(bed) as (server, _):
        assert server.bound is not None
        for name in own:
            answer = await exchange(server.bound, request("/api/v1/targets", name))
            assert answer.status == 200, (name, answer)
            assert [t["name"] for t in answer.json()["targets"]][:1] == ["office"]


async def test_ipv6_loopback_listener(story: Story, tmp_path: Path) -> None:
    """On [::1] the bracketed address and localhost are served, other names are not."""
    async with serving(story.copy(tmp_path, http='listen = "[::1]:9810"'), host="::1") as (
        server,
        _,
    ):
        assert server.bound is not None
        address = ("::1", server.bound[1])
        for name, status in [
            ("[::1]", 200),
            (f"[::1]:{server.bound[1]}", 200),
            ("localhost", 200),
            ("attacker.example", 421),
            ("[::2]:9810", 421),
        ]:
            answer = await exchange(address, request("/api/v1/targets", name))
            assert answer.status == status, (name, answer)


async def test_missing_duplicate_and_malformed_host(story: Story, tmp_path: Path) -> None:
    """No Host: served on HTTP/1.0, 400 on HTTP/1.1; two Hosts or a malformed one: 400 JSON."""
    async with serving(story.copy(tmp_path)) as (server, _):
        assert server.bound is not None
        answer = await exchange(server.bound, request("/api/v1/targets", None, version="1.0"))
        assert answer.status == 200, answer
        # aiohttp's parser refuses this one itself; the answer is JSON all the same.
        answer = await exchange(server.bound, request("/api/v1/targets", None))
        assert answer.status == 400, answer
        assert answer.json()["error"]
        answer = await exchange(server.bound, request("/api/v1/targets", ""))
        assert answer.status == 400, answer
        two = request("/api/v1/targets", "localhost", extra="Host: attacker.example\r\n")
        answer = await exchange(server.bound, two)
        assert answer.status == 400, answer
        assert answer.json()["error"]
        for malformed in ["local host", "localhost:x", "[::1", "a@localhost", "::1"]:
            answer = await exchange(server.bound, request("/api/v1/targets", malformed))
            assert answer.status == 400, (malformed, answer)
            assert answer.json()["error"].startswith("Host: malformed"), malformed


async def test_wildcard_listen_serves_addresses_and_allowed_hosts(
    story: Story, tmp_path: Path
) -> None:
    """With listen 0.0.0.0 the reached address, localhost (over loopback) and allowed_hosts
    are served, other names are not."""
    bed = story.copy(tmp_path, http='listen = "0.0.0.0:9810"\nallowed_hosts = ["mon.lan"]')
    async with serving(bed) as (server, _):
        assert server.bound is not None
        for name, status in [
            ("127.0.0.1:9810", 200),
            ("localhost", 200),
            ("mon.lan", 200),
            ("0.0.0.0", 421),
            ("other.lan", 421),
            ("192.0.2.1", 421),
        ]:
            answer = await exchange(server.bound, request("/", name))
            assert answer.status == status, (name, answer)


async def test_reloaded_allowed_hosts_apply_at_once(story: Story, tmp_path: Path) -> None:
    """A name added to allowed_hosts by a reload is served from the next request on."""
    async with serving(story.copy(tmp_path)) as (server, backend):
        assert server.bound is not None
        answer = await exchange(server.bound, request("/api/v1/targets", "mon.lan"))
        assert answer.status == 421
        http = backend.config.http.model_copy(update={"allowed_hosts": ("mon.lan",)})
        backend.config = backend.config.model_copy(update={"http": http})
        answer = await exchange(server.bound, request("/api/v1/targets", "mon.lan"))
        assert answer.status == 200, answer


def test_defaults_need_no_allowed_hosts() -> None:
    """The default [http] section implies the loopback names only."""
    assert dataclasses.asdict(HostPolicy.of(HttpConfig())) == {"names": frozenset({"127.0.0.1"})}


@pytest.mark.parametrize(
    ("http", "warned"),
    [
        ('listen = "0.0.0.0:9810"', True),
        ('listen = "[::]:9810"', True),
        ('listen = "0.0.0.0:9810"\nallowed_hosts = ["mon.lan"]', False),
        ('listen = "192.0.2.5:9810"', False),
        ("", False),
    ],
)
def test_check_config_warns_of_wildcard_listen_without_names(
    story: Story, tmp_path: Path, http: str, warned: bool
) -> None:
    """check-config says that a wildcard listen with no allowed_hosts serves IP literals only."""
    config = story.copy(tmp_path, http=http).config()
    warnings = check_warnings(config, own_addresses=())
    assert any(w.startswith("http.allowed_hosts: empty") for w in warnings) == warned
