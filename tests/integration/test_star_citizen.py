"""The Star Citizen preset on generated install trees: installs found in both Wine layouts
(and where the RSI launcher's log says), every channel's ``Game.log`` followed and its
``logbackups/`` uploaded once; the game's own rotation (``Game.log`` moved into
``logbackups/`` at every launch) read to its end and never uploaded twice, with the client
running and with it down; no install found is one sentence; end to end with the real
client and server.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.main_process_runner import MainProcessRunner
from harness.server_process import ServerProcess
from harness.waiting import wait_until
from main_process.sources.source_set import SourceSet
from main_process.sources.star_citizen import star_citizen_preset
from tests.support.sources_helpers import (
    RunningSources,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    spooled,
)
from tests.support.star_citizen_install import make_install


def backup_name(build: int, stamp: str) -> str:
    return f"Game Build({build}) {stamp}.log"


def launch_again(channel: Path, build: int, stamp: str) -> Path:
    """What the game does at launch: the previous Game.log goes to logbackups/."""
    moved = channel / "logbackups" / backup_name(build, stamp)
    (channel / "Game.log").rename(moved)
    (channel / "Game.log").write_bytes(b"")
    return moved


def test_installs_in_both_wine_layouts_and_where_the_launcher_says(tmp_path: Path) -> None:
    home = tmp_path / "home"
    wine = make_install(home / ".wine", ("LIVE",))
    lutris = make_install(home / "Games" / "star-citizen", ("LIVE", "PTU", "EPTU"))
    # An install on another drive, named by the launcher's log inside the prefix.
    d_drive = tmp_path / "d-drive"
    other = d_drive / "Games" / "StarCitizen"
    (other / "TECH-PREVIEW").mkdir(parents=True)
    (other / "TECH-PREVIEW" / "Game.log").touch()
    (other / "Shaders").mkdir()
    prefix = home / "Games" / "star-citizen"
    (prefix / "dosdevices").mkdir()
    (prefix / "dosdevices" / "d:").symlink_to(d_drive)
    launcher = prefix / "drive_c" / "users" / "steve" / "AppData" / "Roaming" / "rsilauncher"
    (launcher / "logs").mkdir(parents=True)
    (launcher / "logs" / "log.log").write_text(
        "[main] [LauncherSupport::validateDirectories] - D:\\Games\\StarCitizen\n"
    )
    preset = star_citizen_preset(None, platform="linux", environ={}, home=home)
    found = {install.root: [c.name for c in install.channels] for install in preset.installs}
    assert found == {
        wine: ["LIVE"],
        lutris: ["EPTU", "LIVE", "PTU"],
        prefix / "dosdevices" / "d:" / "Games" / "StarCitizen": ["TECH-PREVIEW"],
    }
    assert len(preset.sources) == 5
    assert all(s.endswith("Game.log") for s in preset.sources)
    assert all(b.endswith(os.path.join("logbackups", "*.log")) for b in preset.backlog)
    assert preset.description.startswith("Star Citizen: LIVE in ")
    assert preset.trouble is None


def test_wineprefix_and_game_dir_choose_the_install(tmp_path: Path) -> None:
    prefix = tmp_path / "custom-prefix"
    install = make_install(prefix, ("LIVE",))
    by_env = star_citizen_preset(
        None, platform="linux", environ={"WINEPREFIX": str(prefix)}, home=tmp_path / "nobody"
    )
    assert [i.root for i in by_env.installs] == [install]
    # --game-dir may name the prefix, the library folder, the install or a channel.
    for given in (prefix, install.parent, install, install / "LIVE"):
        preset = star_citizen_preset(given, platform="linux", environ={}, home=tmp_path)
        assert [c.log for i in preset.installs for c in i.channels] == [
            install / "LIVE" / "Game.log"
        ], given


def test_windows_looks_where_the_launcher_says(tmp_path: Path) -> None:
    appdata = tmp_path / "Roaming"
    (appdata / "rsilauncher" / "logs").mkdir(parents=True)
    (appdata / "rsilauncher" / "logs" / "log.log").write_text(
        "info: Installing to E:\\RSI\\StarCitizen, done\n"
    )
    preset = star_citizen_preset(
        None, platform="win32", environ={"APPDATA": str(appdata)}, home=tmp_path
    )
    assert [str(p) for p in preset.looked_in] == [
        "E:\\RSI\\StarCitizen",
        "C:\\Program Files\\Roberts Space Industries\\StarCitizen",
    ]


def test_no_install_found_is_one_sentence(tmp_path: Path) -> None:
    preset = star_citizen_preset(None, platform="linux", environ={}, home=tmp_path)
    assert preset.installs == ()
    assert preset.trouble is not None
    assert preset.trouble.startswith("No Star Citizen install was found (looked in ")
    assert preset.trouble.endswith("name it with --game-dir DIR (or the game_dir setting).")


async def test_the_games_own_rotation_while_following(tmp_path: Path) -> None:
    install = make_install(tmp_path / "prefix", ("LIVE",))
    live = install / "LIVE"
    # A session played before the client ever ran: backlog, uploaded once.
    (live / "logbackups" / backup_name(9500000, "01 Jan 25 (10 00 00)")).write_bytes(
        numbered_lines(range(0, 50))
    )
    preset = star_citizen_preset(install, platform="linux", environ={}, home=tmp_path)
    spool = open_spool(tmp_path / "data")
    sources = SourceSet(
        list(preset.sources),
        list(preset.backlog),
        spool,
        rotation_dirs=preset.rotation_dirs,
        detached_idle_close=0.2,
    )
    log = live / "Game.log"
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: sources.progress().files_done == 1, 10, "the backlog")
        append_bytes(log, numbered_lines(range(100, 200)))
        await running.wait_until(lambda: running.quiet([log], 150), 10, "the first session")
        append_bytes(log, numbered_lines(range(200, 230)))
        launch_again(live, 9508788, "07 Feb 25 (19 38 41)")
        append_bytes(log, numbered_lines(range(300, 400)))
        await running.wait_until(lambda: running.quiet([log], 280), 10, "the second session")
    assert sources.progress().files_total == 1  # the moved log is not backlog
    numbers = line_numbers(spooled(spool))
    assert_exactly_once_in_order(numbers, [range(0, 50), range(100, 230), range(300, 400)])
    # The live log's sessions in order, across the game's rotation.
    sessions = [n for n in numbers if n >= 100]
    assert sessions == sorted(sessions)
    spool.close()


async def test_the_games_rotation_while_the_client_is_down(tmp_path: Path) -> None:
    install = make_install(tmp_path / "prefix", ("LIVE",))
    live = install / "LIVE"
    log = live / "Game.log"
    preset = star_citizen_preset(install, platform="linux", environ={}, home=tmp_path)

    async def follow(lines: int) -> None:
        spool = open_spool(tmp_path / "data")
        sources = SourceSet(
            list(preset.sources),
            list(preset.backlog),
            spool,
            rotation_dirs=preset.rotation_dirs,
            detached_idle_close=0.2,
        )
        async with RunningSources(sources) as running:
            await running.wait_until(lambda: running.quiet([log], lines), 10, f"{lines} lines")
        spool.close()

    append_bytes(log, numbered_lines(range(0, 100)))
    await follow(100)
    # While the client is down: the session goes on, then the game is launched twice.
    append_bytes(log, numbered_lines(range(100, 150)))
    launch_again(live, 9508788, "07 Feb 25 (19 38 41)")
    append_bytes(log, numbered_lines(range(150, 250)))
    launch_again(live, 9508788, "07 Feb 25 (21 02 10)")
    append_bytes(log, numbered_lines(range(250, 300)))
    await follow(200)
    spool = open_spool(tmp_path / "data")
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 300)])
    spool.close()
    # A third start: nothing more, neither from the logs moved aside nor as backlog.
    await follow(0)
    spool = open_spool(tmp_path / "data")
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 300)])
    spool.close()


def test_end_to_end_the_status_names_the_install_and_lines_arrive(tmp_path: Path) -> None:
    install = make_install(tmp_path / "prefix", ("LIVE", "PTU"))
    (install / "PTU" / "Game.log").write_bytes(numbered_lines(range(0, 20)))
    server = ServerProcess(tmp_path / "server").start()
    client = MainProcessRunner(
        tmp_path / "client",
        "--server",
        server.url,
        "--game",
        "star-citizen",
        "--game-dir",
        str(tmp_path / "prefix"),
    )
    try:
        client.start()
        status = client.wait_for_status(lambda s: s["sentChunks"] >= 1, 30, "the PTU log")
        assert status["game"] == f"Star Citizen: LIVE, PTU in {install}"
        wait_until(lambda: server.dump().count(b"\n") >= 20, 10, "20 lines on the server")
        assert server.dump() == numbered_lines(range(0, 20))
        missing = MainProcessRunner(
            tmp_path / "other",
            "--server",
            server.url,
            "--game",
            "star-citizen",
            "--game-dir",
            str(tmp_path / "nothing-here"),
        )
        try:
            missing.start()
            # The trouble is said as soon as the sources look, which can be before the
            # connection starts: what matters is that the client goes on to connect.
            status = missing.wait_for_status(
                lambda s: s["lastError"] is not None and s["state"] != "disconnected",
                30,
                "trouble, while connecting",
            )
            assert status["lastError"].startswith("No Star Citizen install was found")
            assert status["state"] in ("connecting", "connected")
        finally:
            missing.ensure_stopped()
    finally:
        client.ensure_stopped()
        server.stop()
