"""The PNGs shipped for pystray's tray are what their SVGs draw (Linux: Qt draws them).

``renderer/static/<name>.png`` is drawn from ``<name>.svg`` ahead of time
(``python -m renderer.tray_pictures``) so the Windows host needs no SVG renderer; here each
SVG is drawn again with the same Qt renderer and the pixels must be the same, so an SVG
changed without its PNG fails. The states are told apart by shape, not only colour: the
white marks on their badges (colour aside) all differ.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from renderer.page import static_dir
from renderer.tray_model import TRAY_PICTURES, TRAY_STATES
from renderer.tray_pictures import render_png


def rgba(path: Path) -> Image.Image:
    with Image.open(path) as picture:
        return picture.convert("RGBA")


def test_each_shipped_png_is_what_its_svg_draws(tmp_path: Path) -> None:
    for name in TRAY_PICTURES:
        drawn = tmp_path / f"{name}.png"
        render_png(static_dir() / f"{name}.svg", drawn)
        shipped = rgba(static_dir() / f"{name}.png")
        assert shipped.size == rgba(drawn).size
        assert shipped.tobytes() == rgba(drawn).tobytes(), (
            f"{name}.png is out of date: run python -m renderer.tray_pictures"
        )


def white_marks(picture: Image.Image) -> bytes:
    """Where the picture is opaque and near white (the badge's marks: a check, dots, a
    slash, an exclamation mark), colour aside."""
    data = picture.tobytes()  # RGBA, four bytes a pixel
    return bytes(
        1 if data[i + 3] > 200 and min(data[i : i + 3]) > 230 else 0 for i in range(0, len(data), 4)
    )


def test_the_states_pictures_differ_in_shape_not_only_in_colour() -> None:
    shapes = {white_marks(rgba(static_dir() / f"tray-{state}.png")) for state in TRAY_STATES}
    assert len(shapes) == len(TRAY_STATES)
