"""Make the small calibration photos in onnx_prune/data/images/ from freely licensed photos.

Every photo is resized so that its shorter side is 256 pixels (Lanczos), converted to RGB and
saved as a baseline JPEG of quality 90 with no EXIF or other metadata. onnx_prune/data/NOTICE.md
lists the source and licence of each photo.

Sources (no network access beyond the package registries is needed):

- Debian's ``darknet`` package (``apt-get install darknet``):
  /usr/share/darknet/data/{dog,eagle,giraffe,horses}.jpg
- the scikit-image wheel: skimage/data/{astronaut.png,chelsea.png,coffee.png,rocket.jpg}
- the matplotlib wheel: matplotlib/mpl-data/sample_data/grace_hopper.jpg

The wheels are fetched with ``pip download --no-deps`` into a temporary folder and read as zip
files; nothing is installed. Run from the repository root with any Python that has Pillow::

    python models/make_images.py            # writes onnx_prune/data/images/*.jpg
    python models/make_images.py --out DIR  # writes elsewhere

Made with scikit-image 0.26.0, matplotlib 3.11.2, Pillow 13.0.0 and Debian's darknet
0.0.0+git20180914.61c9d02e-2+b4.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image, ImageOps

SHORTER_SIDE = 256
JPEG_QUALITY = 90
DARKNET_DATA = Path("/usr/share/darknet/data")
IMAGES = Path(__file__).resolve().parents[1] / "onnx_prune" / "data" / "images"

# output name -> (pip requirement or None for the darknet folder, path inside the wheel/folder)
SOURCES: dict[str, tuple[str | None, str]] = {
    "dog.jpg": (None, "dog.jpg"),
    "eagle.jpg": (None, "eagle.jpg"),
    "giraffe.jpg": (None, "giraffe.jpg"),
    "horses.jpg": (None, "horses.jpg"),
    "astronaut.jpg": ("scikit-image==0.26.0", "skimage/data/astronaut.png"),
    "chelsea.jpg": ("scikit-image==0.26.0", "skimage/data/chelsea.png"),
    "coffee.jpg": ("scikit-image==0.26.0", "skimage/data/coffee.png"),
    "rocket.jpg": ("scikit-image==0.26.0", "skimage/data/rocket.jpg"),
    "grace_hopper.jpg": ("matplotlib==3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
}


def download_wheel(requirement: str, folder: Path) -> Path:
    """Download one wheel (no dependencies) into a new subfolder of ``folder``; return its path."""
    target = folder / requirement.replace("==", "-")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*command, "-q", "-d", str(target), requirement], check=True)
    (wheel,) = target.glob("*.whl")
    return wheel


def read_source(requirement: str | None, inner_path: str, wheels: dict[str, Path]) -> bytes:
    """Return the raw bytes of one source photo."""
    if requirement is None:
        return (DARKNET_DATA / inner_path).read_bytes()
    with zipfile.ZipFile(wheels[requirement]) as wheel:
        return wheel.read(inner_path)


def shrink(data: bytes) -> Image.Image:
    """Decode, apply EXIF orientation, convert to RGB and resize the shorter side to 256."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    width, height = image.size
    scale = SHORTER_SIDE / min(width, height)
    size = (max(SHORTER_SIDE, round(width * scale)), max(SHORTER_SIDE, round(height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    resized.info.clear()  # drop the JPEG comment and any other metadata of the source
    return resized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = sorted({req for req, _ in SOURCES.values() if req is not None})
        wheels = {req: download_wheel(req, Path(tmp)) for req in requirements}
        total = 0
        for name, (requirement, inner_path) in SOURCES.items():
            image = shrink(read_source(requirement, inner_path, wheels))
            target = args.out / name
            image.save(target, "JPEG", quality=JPEG_QUALITY, optimize=True)
            total += target.stat().st_size
            print(f"{target}  {image.size[0]}x{image.size[1]}  {target.stat().st_size} bytes")
        print(f"total {total} bytes")


if __name__ == "__main__":
    main()
