"""A Star Citizen install as a Wine prefix holds it (``make_install``), for the tests that follow
the game's logs."""

from __future__ import annotations

from pathlib import Path

INSTALL = Path("drive_c") / "Program Files" / "Roberts Space Industries" / "StarCitizen"


def make_install(root: Path, channels: tuple[str, ...] = ("LIVE", "PTU")) -> Path:
    install = root / INSTALL
    for channel in channels:
        (install / channel / "logbackups").mkdir(parents=True)
        (install / channel / "Game.log").touch()
    (install / "LIVE" / "Data.p4k").touch()  # not a channel thing, must be ignored
    return install
