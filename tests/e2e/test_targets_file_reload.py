"""The daemon rereads `[daemon] targets_file` on SIGHUP: new lines become targets, a bad line
is refused with its file and line, and the running targets stay."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.daemon import daemon_process, write_config


def test_sighup_rereads_the_targets_file(tmp_path: Path) -> None:
    """A line added to the targets file (a loopback range) is scanned after SIGHUP; a broken
    line is refused with file and line, and the targets stay as they were."""
    csv_file = tmp_path / "targets.csv"
    csv_file.write_text("name,address,expected_open,ignore\nlo,127.0.0.1,,\n")
    config = write_config(tmp_path, [], sentinel="1h", quick="1h", full="24h")
    text = config.read_text().replace("[daemon]\n", '[daemon]\ntargets_file = "targets.csv"\n')
    config.write_text(text)
    with daemon_process(config, tmp_path / "daemon.log") as daemon:
        daemon.start()
        daemon.wait_log('"started"', 30)
        assert '"targets": 1' in daemon.log()
        csv_file.write_text(csv_file.read_text() + "blk,127.0.0.4/31,,\n")
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        daemon.wait_log('"reloaded"', 30, after=mark)
        assert '"added": ["blk-127.0.0.4", "blk-127.0.0.5"]' in daemon.log()[mark:]
        daemon.wait_log('"target": "blk-127.0.0.5"', 30, after=mark)  # scanned
        csv_file.write_text(csv_file.read_text() + "bad,127.0.0.0/8,,\n")
        mark = len(daemon.log())
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload rejected", 30, after=mark)
        assert (
            "targets.csv:4: address: range 127.0.0.0/8 has 16777216 addresses"
            in (daemon.log()[mark:])
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
