"""Connect scanning: port specs, the engine, and the results it produces."""

from exposuremon.scan.engine import Scanner
from exposuremon.scan.result import PortState, ScanResult, ScanStats
from exposuremon.scan.target import ScanError, TargetScan
from exposuremon.scan.timing import ScanOptions

__all__ = [
    "PortState",
    "ScanError",
    "ScanOptions",
    "ScanResult",
    "ScanStats",
    "Scanner",
    "TargetScan",
]
