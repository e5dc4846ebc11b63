"""Fast text exposition of the state metrics, appended to prometheus-client's scrape response.

prometheus-client renders about 7 µs per sample in the text format and 15 µs in OpenMetrics
(which Prometheus asks for first), and building its sample objects costs 4 µs more. A fleet of
1000 targets has some 30,000 state samples: 650 ms per scrape. The state families here are
plain data rendered with one f-string per sample (under 1 µs), and the response is still
prometheus-client's: its aiohttp handler negotiates the format and renders the work counters,
and the state families are added to its body (before OpenMetrics' `# EOF`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

OPENMETRICS = "application/openmetrics-text"
_EOF = b"# EOF\n"


class Family:
    """One metric family whose sample lines are printed as they are added.

    A sample line reads the same in both formats (a counter's samples carry `_total` in
    both); only the HELP and TYPE lines differ, so each line is formatted once, at `add`,
    with one `str.format` call on a template made once per family.
    """

    def __init__(self, name: str, kind: str, help: str, labels: tuple[str, ...]) -> None:
        self.name = name  # without the `_total` a counter's samples carry
        self.kind = kind  # "gauge" or "counter"
        self.help = help
        self.labels = labels
        self.lines: list[str] = []
        sample = f"{name}_total" if kind == "counter" else name
        pairs = ",".join(f'{n}="{{}}"' for n in labels)
        self.template = f"{sample}{{{{{pairs}}}}} {{}}\n" if labels else f"{sample} {{}}\n"

    def add(self, values: tuple[str, ...], value: float) -> None:
        """Add one sample: label values in `labels` order (escaped, see `escape`), its value."""
        self.lines.append(self.template.format(*values, number(value)))


def escape(value: str) -> str:
    """A label value escaped for both text formats."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return value


def number(value: float) -> str:
    """A sample value: integers without a fraction, as Go's strconv prints them."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family], *, openmetrics: bool) -> str:
    """The families in the Prometheus text format, or OpenMetrics (without `# EOF`)."""
    out: list[str] = []
    for f in families:
        help_text = f.help.replace("\\", r"\\").replace("\n", r"\n")
        # Text format names the counter family with `_total`; OpenMetrics without it.
        counter = f.kind == "counter"
        family_name = f"{f.name}_total" if counter and not openmetrics else f.name
        out.append(f"# HELP {family_name} {help_text}\n# TYPE {family_name} {f.kind}\n")
        out.extend(f.lines)
    return "".join(out)


def scrape_handler(
    registry: CollectorRegistry,
    refresh: Callable[[], Awaitable[None]],
    render_state: Callable[[bool], bytes],
) -> Handler:
    """prometheus-client's aiohttp handler for `registry`, with the state families added."""
    prometheus = make_aiohttp_handler(registry)

    async def scrape(request: web.Request) -> web.StreamResponse:
        await refresh()
        response = await prometheus(request)
        if not isinstance(response, web.Response) or response.status != 200:
            return response
        body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
        if response.content_type == OPENMETRICS and body.endswith(_EOF):
            response.body = body[: -len(_EOF)] + render_state(True) + _EOF
        else:
            response.body = body + render_state(False)
        return response

    return scrape
