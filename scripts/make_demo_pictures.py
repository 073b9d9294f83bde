"""Draw a few simple character pictures for the quick start (no downloads, no models)."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw


def portrait(hair: tuple[int, int, int], shirt: tuple[int, int, int], turned: bool) -> Image.Image:
    image = Image.new("RGB", (512, 640), (236, 228, 214))
    draw = ImageDraw.Draw(image)
    draw.rectangle((96, 440, 416, 640), fill=shirt)
    draw.ellipse((136, 96, 376, 392), fill=hair)
    offset = 24 if turned else 0
    draw.ellipse((168 + offset, 150, 344 + offset, 380), fill=(241, 205, 178))
    for x in (214, 292):
        draw.ellipse((x + offset, 240, x + 20 + offset, 258), fill=(40, 90, 200))
    draw.arc((222 + offset, 300, 290 + offset, 336), 20, 160, fill=(150, 60, 60), width=4)
    return image


def from_behind(hair: tuple[int, int, int], shirt: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (512, 640), (236, 228, 214))
    draw = ImageDraw.Draw(image)
    draw.rectangle((96, 440, 416, 640), fill=shirt)
    draw.ellipse((136, 96, 376, 420), fill=hair)
    return image


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    portrait((20, 20, 24), (250, 250, 250), False).save(folder / "alice-front.png")
    portrait((20, 20, 24), (250, 250, 250), True).save(folder / "alice-side.png")
    from_behind((20, 20, 24), (250, 250, 250)).save(folder / "alice-back.png")
    portrait((190, 60, 30), (60, 90, 150), False).save(folder / "bob.png")
    portrait((10, 10, 10), (200, 30, 40), False).save(folder / "hero.jpg", quality=92)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
