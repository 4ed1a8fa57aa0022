"""The tray's pictures as PNGs, drawn from their SVGs, for pystray (which takes bitmaps).

Owns ``render_png(svg, size)``, which draws an SVG of ``static/`` into a square PNG with
Qt's SVG renderer, and ``main``: ``python -m renderer.tray_pictures`` (re)writes
``static/<name>.png`` for every name of ``renderer.tray_model.TRAY_PICTURES``. The PNGs
are shipped in the package, drawn ahead of time on Linux, so the Windows host needs
neither Qt nor an SVG renderer; a test checks that each PNG is what its SVG draws today.

Must not: be imported by the host (Qt is imported only when a picture is drawn, and only
Linux has it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from renderer.page import static_dir
from renderer.tray_model import PICTURE_SIZE, TRAY_PICTURES


def picture_path(name: str, suffix: str) -> Path:
    """``static/<name><suffix>``."""
    return static_dir() / f"{name}{suffix}"


def render_png(svg: Path, target: Path, size: int = PICTURE_SIZE) -> None:
    """Write ``svg`` drawn into a square PNG of ``size`` pixels a side, with a
    transparent background, to ``target``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    if QGuiApplication.instance() is None:
        # Kept on the module: Qt must not lose its application while it draws.
        globals()["_application"] = QGuiApplication([])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not an SVG Qt can draw")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(target)):  # the format follows the suffix
        raise OSError(f"could not write {target}")


def main() -> int:
    for name in TRAY_PICTURES:
        target = picture_path(name, ".png")
        render_png(picture_path(name, ".svg"), target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
