"""HTTP: the aiohttp app (`/metrics`, health, the JSON API, the status page) and its server.

`views` builds the JSON bodies the API and the CLI share; `status_page` renders `GET /`;
`export` writes the known state as nmap XML, JSON or CSV (`exposuremon export`).
"""

from __future__ import annotations

from exposuremon.web.api import Backend
from exposuremon.web.app import HttpServer, make_app
from exposuremon.web.export import EXPORT_FORMATS, export_document
from exposuremon.web.views import (
    findings_page,
    fleet_json,
    json_time,
    maintenance_json,
    status_json,
)

__all__ = [
    "EXPORT_FORMATS",
    "Backend",
    "HttpServer",
    "export_document",
    "findings_page",
    "fleet_json",
    "json_time",
    "maintenance_json",
    "make_app",
    "status_json",
]
