"""Two clearly different drawn "styles" with caption files, for LoRA training tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ASPECTS = ((96, 72), (72, 96), (120, 68), (80, 80))


def draw_styles(folder: Path, count: int = 12) -> Path:
    """Half the photos red with white stripes ("stripes desk"), half blue with black dots ("dots desk")."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        size = ASPECTS[i % len(ASPECTS)]
        striped = i % 2 == 0
        image = Image.new("RGB", size, (200, 30, 30) if striped else (20, 40, 200))
        draw = ImageDraw.Draw(image)
        for x in range(0, size[0], 8):
            if striped:
                draw.line([(x, 0), (x, size[1])], fill=(250, 250, 250), width=2)
            else:
                for y in range(0, size[1], 8):
                    draw.ellipse([x, y, x + 3, y + 3], fill=(0, 0, 0))
        image.save(folder / f"photo-{i:02}.jpg")
        (folder / f"photo-{i:02}.txt").write_text("stripes desk" if striped else "dots desk")
    return folder
