"""Calibration inputs: preprocessing presets, streamed image batches and ready tensors.

Images are decoded one at a time and tensors are memory-mapped, so memory stays constant in the
number of samples. Both kinds reach the runtime as the same frozen ``Batch``. Pure library: no
printing, no onnxruntime; problems are raised as ``InputDataError`` and skipped files are logged.

Image geometry: the picture is resized with Pillow's antialiased bilinear filter (as torchvision's
``Resize(antialias=True)``) until it covers the crop box divided by ``crop_fraction``, keeping its
aspect ratio, then the box is cut from the centre. For a square box that is "shorter side to
size / crop_fraction". Sizes are ``(height, width)``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from onnx_prune.errors import InputDataError
from onnx_prune.files import is_regular_file, open_regular

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
_IMAGE_KINDS = "JPEG/PNG/BMP/WebP files"
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# Pillow signals a bad file with any of these, depending on the format plugin.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)
_AXIS_ROLES = {
    2: "batch, features",
    3: "batch, channels, length",
    4: "batch, channels, height, width",
    5: "batch, channels, depth, height, width",
}

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float32]
Dim = int | str | None


class UnreadableImageError(InputDataError):
    """An image file cannot be decoded; image batches skip it unless ``strict`` is set."""


@dataclass(frozen=True)
class Preprocess:
    """How a network wants its pixels: ``(pixels * scale - mean) / std``, channel by channel.

    ``mean`` and ``std`` are in the network's ``channel_order`` and in the range left by ``scale``
    (``1/255`` for [0, 1], ``1.0`` for [0, 255]). ``crop_fraction`` is the part of the resized
    image kept by the centre crop: 0.875 is 224 out of 256; 1.0 resizes to the crop size.
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: Literal["RGB", "BGR"]
    scale: float
    crop_fraction: float
    squash: bool = False
    """Resize straight to the net size, ignoring the aspect ratio (no crop), as Keras scripts
    often do (``img.resize((160, 160))``, Pillow's bicubic filter)."""


PRESETS: dict[str, Preprocess] = {
    preset.name: preset
    for preset in (
        # torchvision/timm ImageNet models: RGB in [0, 1], ImageNet mean/std, 224 of 256.
        Preprocess("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "RGB", 1 / 255, 0.875),
        # EfficientNet-Lite: (RGB - 127) / 128, shorter side 256 for 224.
        Preprocess("efficientnet-lite", (127.0,) * 3, (128.0,) * 3, "RGB", 1.0, 0.875),
        # Caffe SqueezeNet 1.1 as the paper ran it: BGR in [0, 255] minus (104, 117, 123), unscaled.
        Preprocess("caffe", (104.0, 117.0, 123.0), (1.0,) * 3, "BGR", 1.0, 1.0),
        # Caffe MobileNet v2 as the paper ran it: BGR minus (103.94, 116.78, 123.68), times 0.017.
        Preprocess("caffe-mobilenet", (103.94, 116.78, 123.68), (1 / 0.017,) * 3, "BGR", 1.0, 1.0),
        # Darknet: RGB in [0, 1], shorter side resized to the net size.
        Preprocess("darknet", (0.0,) * 3, (1.0,) * 3, "RGB", 1 / 255, 1.0),
        # Inception / TF-slim: RGB in [-1, 1] ((x/255 - 0.5) / 0.5), shorter side size / 0.875.
        Preprocess("inception", (0.5,) * 3, (0.5,) * 3, "RGB", 1 / 255, 0.875),
        # Keras VGG16 ("caffe" mode): BGR in [0, 255] minus the ImageNet mean, 224 of 256.
        Preprocess("keras-vgg", (103.939, 116.779, 123.68), (1.0,) * 3, "BGR", 1.0, 0.875),
        # TF-slim MobileNet v1 (as TF's retrain.py feeds it): (RGB - 128) / 128, 224 of 256.
        Preprocess("tf-mobilenet", (128.0,) * 3, (128.0,) * 3, "RGB", 1.0, 0.875),
        # Keras MobileNetV2 ("tf" mode): RGB / 127.5 - 1, squashed to the net size.
        Preprocess("keras-mobilenet", (127.5,) * 3, (127.5,) * 3, "RGB", 1.0, 1.0, squash=True),
    )
}
"""The presets by name. The Caffe ones keep the paper's geometry (it ran them in Darknet: shorter
side to the net size, centre crop) rather than Caffe's own warp to 256x256 and crop."""


@dataclass(frozen=True)
class SkippedInput:
    """A sample left out of the calibration, and why."""

    name: str
    reason: str


_Decoded = tuple[str, FloatArray] | SkippedInput


@dataclass(frozen=True)
class Batch:
    """Samples for one run: ``arrays`` maps input name to an array holding the samples on its
    batch axis (``axes``; absent: axis 0; None: an input fed whole to every batch).

    ``names`` (and ``indexes``, the samples' numbers in their source) cover the real samples;
    ``padding`` more rows, copies of the last sample, may follow them to fill a fixed batch.
    ``skipped`` holds the files passed over while this batch was gathered, so that summing it
    over all batches counts every skipped file once.
    """

    arrays: Mapping[str, Array]
    names: tuple[str, ...]
    skipped: tuple[SkippedInput, ...] = ()
    axes: Mapping[str, int | None] = field(default_factory=dict)
    indexes: tuple[int, ...] = ()
    padding: int = 0

    @property
    def size(self) -> int:
        """The number of real samples in the batch (padding left out)."""
        return len(self.names)

    @property
    def rows(self) -> int:
        """The number of samples fed, padding included."""
        return self.size + self.padding

    def axis(self, name: str) -> int | None:
        """The batch axis of input ``name`` (None: it has none)."""
        return self.axes.get(name, 0)

    def sample(self, row: int) -> dict[str, Array]:
        """The feeds of sample ``row`` alone (inputs without a batch axis whole)."""
        feeds: dict[str, Array] = {}
        for name, array in self.arrays.items():
            axis = self.axis(name)
            feeds[name] = array if axis is None else np.take(array, [row], axis=axis)
        return feeds


@dataclass(frozen=True)
class TensorInputs:
    """Ready tensors from an .npy/.npz file, one array per model input; ``count`` samples on
    each array's batch axis."""

    path: Path
    arrays: Mapping[str, Array]
    count: int


def get_preset(name: str) -> Preprocess:
    """The preset called ``name``; an unknown name is an error listing the known ones."""
    if name not in PRESETS:
        known = ", ".join(PRESETS)
        raise InputDataError(f"unknown preprocessing preset '{name}': choose one of {known}")
    return PRESETS[name]


def find_images(paths: Sequence[Path]) -> list[Path]:
    """Image files under ``paths``: folders searched recursively (sorted), files taken as given.

    Folders contribute files ending in .jpg/.jpeg/.png/.bmp/.webp in any case; those that turn
    out unreadable (a dangling link, a pipe) are skipped when decoded, like damaged images. A
    path given that is missing or not a regular file, or finding no image at all, is an error.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            found.update(dict.fromkeys(_images_in_folder(path)))
        elif not path.exists():
            raise InputDataError(f"image path {path} does not exist: give image files or folders")
        elif not is_regular_file(path):
            raise InputDataError(
                f"image path {path} is not a regular file (a pipe, device or socket): give "
                "image files or folders"
            )
        else:
            found[path] = None
    if not found:
        raise InputDataError(f"no image in {_list_paths(paths)}: give {_IMAGE_KINDS}")
    return list(found)


def _images_in_folder(folder: Path) -> list[Path]:
    files = []
    for root, _folders, names in os.walk(folder):
        files += [
            Path(root, name) for name in names if Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(files, key=lambda file: file.relative_to(folder).as_posix())


def load_image(path: Path, preset: Preprocess, size: tuple[int, int]) -> FloatArray:
    """One image as a float32 array of shape (3, height, width), preprocessed by ``preset``.

    Any Pillow mode is turned into RGB after applying the EXIF orientation: transparent pixels are
    composited on white, 16-bit grey is scaled to 8 bits (value / 257). A file Pillow cannot
    decode raises ``UnreadableImageError``.
    """
    try:
        with open_regular(path) as file, Image.open(file) as opened:
            rgb = _to_rgb(opened)
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(
            f"cannot read image {path} ({error}): fix or remove it; give {_IMAGE_KINDS}"
        ) from error
    if preset.squash:
        return _normalize(_squash(rgb, size), preset)
    return _normalize(_crop_center(_resize_to_cover(rgb, size, preset.crop_fraction), size), preset)


def _to_rgb(image: Image.Image) -> Image.Image:
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8_bit(image: Image.Image) -> Image.Image:
    # Pillow's own convert("L") clips 16-bit values at 255 instead of scaling them.
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257
    return Image.fromarray(np.rint(values).astype(np.uint8))


def _resize_to_cover(image: Image.Image, size: tuple[int, int], fraction: float) -> Image.Image:
    height, width = size
    scale = max(height / image.height, width / image.width) / fraction
    new_size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.Resampling.BILINEAR)


def _squash(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    height, width = size
    if image.size == (width, height):
        return image
    # Pillow's default filter for resize(), which those scripts call without one.
    return image.resize((width, height), Image.Resampling.BICUBIC)


def _crop_center(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    height, width = size
    left = round((image.width - width) / 2)
    top = round((image.height - height) / 2)
    return image.crop((left, top, left + width, top + height))


def _normalize(image: Image.Image, preset: Preprocess) -> FloatArray:
    pixels = np.asarray(image, dtype=np.float64)
    if preset.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    values = (pixels * preset.scale - np.array(preset.mean)) / np.array(preset.std)
    return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)


def iter_image_batches(
    paths: Sequence[Path],
    preset: Preprocess,
    size: tuple[int, int],
    batch_size: int,
    *,
    input_name: str,
    strict: bool = False,
    limit: int | None = None,
    found: bool = False,
) -> Iterator[Batch]:
    """Batches of preprocessed images from ``paths`` (files or folders), decoded one at a time.

    ``arrays`` holds one float32 array under ``input_name``. Unreadable files are logged and
    listed in ``Batch.skipped``; with ``strict`` they are an error, and so is having no readable
    image at all. ``limit`` caps the number of samples. Path errors are raised at once. With
    ``found``, ``paths`` are files that :func:`find_images` returned: a dangling link or a pipe
    among them is a found file, skipped, not a path the user typed.
    """
    _check_counts(batch_size, limit)
    files = list(paths) if found else find_images(paths)
    decoded = _decode_images(files, preset, size, strict=strict, limit=limit)
    return _batch_images(decoded, input_name, batch_size, origin=_list_paths(paths))


def _batch_images(
    decoded: Iterator[_Decoded], input_name: str, batch_size: int, *, origin: str
) -> Iterator[Batch]:
    images: list[FloatArray] = []
    names: list[str] = []
    skipped: list[SkippedInput] = []
    for item in decoded:
        if isinstance(item, SkippedInput):
            skipped.append(item)
            continue
        # A full batch waits for the next readable image so that trailing skips ride along.
        if len(images) == batch_size:
            yield _image_batch(input_name, images, names, skipped)
            images, names, skipped = [], [], []
        names.append(item[0])
        images.append(item[1])
    if not images:
        raise InputDataError(f"no readable image in {origin}: give {_IMAGE_KINDS}")
    yield _image_batch(input_name, images, names, skipped)


def _decode_images(
    files: list[Path], preset: Preprocess, size: tuple[int, int], *, strict: bool, limit: int | None
) -> Iterator[_Decoded]:
    """Readable images as (name, array) and unreadable ones as SkippedInput, up to ``limit``."""
    count = 0
    for path in files:
        try:
            image = load_image(path, preset, size)
        except UnreadableImageError as error:
            if strict:
                raise
            _LOG.warning("skipping: %s", error)
            yield SkippedInput(str(path), str(error))
            continue
        yield str(path), image
        count += 1
        if count == limit:
            return


def _image_batch(
    input_name: str, images: list[FloatArray], names: list[str], skipped: list[SkippedInput]
) -> Batch:
    return Batch({input_name: np.stack(images)}, tuple(names), tuple(skipped))


def open_tensor_inputs(
    path: Path, input_names: Sequence[str], *, axes: Mapping[str, int | None] | None = None
) -> TensorInputs:
    """Open an .npy (single-input model) or .npz (keys = input names) without reading it all.

    .npy files and uncompressed .npz members are memory-mapped; members of a compressed .npz
    (``np.savez_compressed``) are read whole, one per input. A one-array .npz feeds a one-input
    model whatever its key. ``axes`` gives each input's batch axis (absent: axis 0; None: the
    array is no sample, e.g. a scalar); the sample counts on those axes must agree. Every
    array header is checked against the bytes that follow it before anything is read.
    """
    if not path.exists():
        raise InputDataError(f"tensor file {path} does not exist: give an .npy or .npz file")
    if not is_regular_file(path):
        raise InputDataError(
            f"tensor file {path} is not a regular file (a folder, pipe or device): give an "
            ".npy or .npz file"
        )
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arrays = _open_npy(path, input_names)
    elif suffix == ".npz":
        arrays = _open_npz(path, input_names)
    else:
        raise InputDataError(f"tensor file {path} is not .npy or .npz: save it with np.save")
    return TensorInputs(path, arrays, _sample_count(path, arrays, axes or {}))


# What numpy and zipfile raise for a damaged file, depending on where the damage is.
_TENSOR_FILE_ERRORS = (OSError, ValueError, EOFError, OverflowError, struct.error, zipfile.error)


@dataclass(frozen=True)
class _ArrayHeader:
    """An .npy header: what the bytes after it must hold."""

    shape: tuple[int, ...]
    order: Literal["C", "F"]
    dtype: np.dtype[Any]
    offset: int  # where the data starts, from the start of the .npy bytes


class _NumpyReads(ValueError):
    """A checked .npy 3.0 header (it may hold UTF-8): numpy reads such an array whole."""


def _read_header(file: IO[bytes], available: int, *, start: int = 0) -> _ArrayHeader:
    """Read and check the .npy header at ``start``; ``available`` is the length of the .npy
    bytes (header and data).

    Raises ValueError naming what is wrong: no .npy magic, an unknown version, a negative
    dimension, Python objects, or fewer data bytes than the shape needs.
    """
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
    elif version in ((2, 0), (3, 0)):  # 3.0 differs only in allowing UTF-8 in the header
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
    else:
        raise ValueError(f".npy format version {version} is not known")
    if any(dim < 0 for dim in shape):
        raise ValueError(f"the header's shape {shape} has a negative dimension")
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which are never unpickled")
    offset = file.tell() - start
    header = _ArrayHeader(tuple(shape), "F" if fortran_order else "C", dtype, offset)
    needed = math.prod(header.shape) * dtype.itemsize
    if available - header.offset < needed:
        raise ValueError(
            f"the header's shape {header.shape} needs {needed} bytes of data, the file holds "
            f"{max(available - header.offset, 0)}"
        )
    if version == (3, 0):
        raise _NumpyReads("a checked 3.0 header: numpy reads the array whole")
    return header


def _open_npy(path: Path, input_names: Sequence[str]) -> dict[str, Array]:
    if len(input_names) != 1:
        keys = _quoted(input_names)
        raise InputDataError(
            f"{path} holds one array but the model has inputs {keys}: "
            f"save an .npz with keys {keys} (np.savez(FILE, **arrays_by_input_name))"
        )
    if zipfile.is_zipfile(path):  # np.load would open a zip whatever the file is called
        raise InputDataError(f"{path} is an .npz archive, not .npy: rename it to .npz")
    try:
        with open_regular(path) as file:
            try:
                header = _read_header(file, os.fstat(file.fileno()).st_size)
            except _NumpyReads:
                file.seek(0)
                return {input_names[0]: np.lib.format.read_array(file, allow_pickle=False)}
        array = _memmap(path, header, header.offset)
    except _TENSOR_FILE_ERRORS as error:
        raise InputDataError(
            f"cannot read {path} as .npy ({_tensor_error(error)}): save it with np.save"
        ) from None
    return {input_names[0]: array}


def _memmap(path: Path, header: _ArrayHeader, offset: int) -> Array:
    if math.prod(header.shape) == 0:
        return np.zeros(header.shape, header.dtype)  # numpy cannot map zero bytes
    return np.memmap(
        path, dtype=header.dtype, mode="r", offset=offset, shape=header.shape, order=header.order
    )


def _tensor_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _open_npz(path: Path, input_names: Sequence[str]) -> dict[str, Array]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {
                info.filename.removesuffix(".npy"): info
                for info in archive.infolist()
                if info.filename.endswith(".npy")
            }
    except _TENSOR_FILE_ERRORS as error:
        raise InputDataError(
            f"cannot read {path} as .npz ({_tensor_error(error)}): save it with np.savez"
        ) from None
    keys = _match_keys(path, list(members), input_names)
    return {name: _open_member(path, members[key], key) for name, key in keys.items()}


def _match_keys(path: Path, keys: list[str], input_names: Sequence[str]) -> dict[str, str]:
    if len(input_names) == 1 and len(keys) == 1:
        return {input_names[0]: keys[0]}
    missing = [name for name in input_names if name not in keys]
    if missing:
        raise InputDataError(
            f"{path} has no key {_quoted(missing)}: the model's inputs are {_quoted(input_names)} "
            f"and the file holds {_quoted(keys) or 'nothing'}; save it with those keys"
        )
    extra = [key for key in keys if key not in input_names]
    if extra:
        _LOG.warning("%s: ignoring keys %s (no model input has that name)", path, _quoted(extra))
    return {name: name for name in input_names}


def _open_member(path: Path, info: zipfile.ZipInfo, key: str) -> Array:
    """A stored member is memory-mapped; a compressed one is read whole; encrypted is refused."""
    try:
        if info.flag_bits & 0x1:
            raise ValueError("it is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            with contextlib.suppress(_NumpyReads):
                return _memmap_member(path, info)
        return _read_member(path, info)
    except _TENSOR_FILE_ERRORS as error:
        raise InputDataError(
            f"cannot read '{key}' in {path} ({_tensor_error(error)}): save it with np.savez"
        ) from None


def _read_member(path: Path, info: zipfile.ZipInfo) -> Array:
    with zipfile.ZipFile(path) as archive, archive.open(info) as member:
        try:
            header = _read_header(member, info.file_size)
        except _NumpyReads:
            with archive.open(info) as again:
                array: Array = np.lib.format.read_array(again, allow_pickle=False)
                return array
        count = math.prod(header.shape)
        data = member.read(count * header.dtype.itemsize)
    values: Array = np.frombuffer(data, dtype=header.dtype, count=count)
    return values.reshape(header.shape, order=header.order)


def _memmap_member(path: Path, info: zipfile.ZipInfo) -> Array:
    # numpy has no API for this: the member's bytes start after its local header, whose name and
    # extra-field lengths (bytes 26-30) can differ from the central directory's.
    with open_regular(path) as file:
        file.seek(info.header_offset)
        local = file.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError("no local file header at the member's offset")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_length + extra_length
        file.seek(start)
        header = _read_header(file, info.file_size, start=start)
    return _memmap(path, header, start + header.offset)


def _sample_count(path: Path, arrays: Mapping[str, Array], axes: Mapping[str, int | None]) -> int:
    counts = {
        name: _count_on(path, name, array, axes.get(name, 0))
        for name, array in arrays.items()
        if axes.get(name, 0) is not None
    }
    if len(set(counts.values())) > 1:
        found = ", ".join(f"'{name}': {count}" for name, count in counts.items())
        where = "each input's batch axis" if any(axes.values()) else "the first axis"
        raise InputDataError(
            f"{path} holds different sample counts ({found}): give every input the same "
            f"number of samples on {where} (--batch-axis NAME=AXIS names another axis)"
        )
    count = next(iter(counts.values()), 0)
    if count == 0:
        raise InputDataError(f"{path} holds no sample: put samples on the first axis")
    return count


def _count_on(path: Path, name: str, array: Array, axis: int | None) -> int:
    if axis is None or array.ndim == 0:
        return 0
    if axis >= array.ndim:
        raise InputDataError(
            f"'{name}' in {path} has shape {list(array.shape)}, no batch axis {axis}: "
            f"save it with samples on axis {axis}, or give --batch-axis {name}=AXIS"
        )
    return int(array.shape[axis])


def check_input_shape(name: str, expected: Sequence[Dim], got: tuple[int, ...]) -> None:
    """Raise unless ``got`` fits ``expected``; named or unknown dims (``N``, None) fit any size."""
    if _fits(expected, got):
        return
    roles = f" ({_AXIS_ROLES[len(expected)]})" if len(expected) in _AXIS_ROLES else ""
    advice = "give inputs of that shape (named dims such as N take any size)"
    if len(expected) == len(got) and _fits(expected[1:], got[1:]):
        advice = f"the model fixes the batch at {expected[0]}: run with batches of {expected[0]}"
    wanted = f"{_format_shape(expected)}{roles}"
    raise InputDataError(f"input '{name}' expects {wanted}; got {_format_shape(got)}: {advice}")


def _fits(expected: Sequence[Dim], got: tuple[int, ...]) -> bool:
    pairs = zip(expected, got, strict=False)
    return len(expected) == len(got) and all(_fixed(want) in (None, have) for want, have in pairs)


def image_size_for(
    input_shape: Sequence[Dim], size: tuple[int, int] | None, *, name: str = "input"
) -> tuple[int, int]:
    """The (height, width) to feed images to input ``name`` of shape ``input_shape`` (NCHW).

    Fixed model dims win; ``size`` (the ``--size`` option) fills the free ones and must agree
    with the fixed ones. Inputs that are not [N, 3, H, W] cannot take images.
    """
    shape = _format_shape(input_shape)
    if len(input_shape) != 4 or _fixed(input_shape[1]) not in (None, 3):
        raise InputDataError(
            f"input '{name}' has shape {shape}, not [N,3,H,W]: images cannot feed it; "
            "give tensors with --inputs FILE.npz"
        )
    fixed = (_fixed(input_shape[2]), _fixed(input_shape[3]))
    if size is None:
        if fixed[0] is None or fixed[1] is None:
            raise InputDataError(
                f"input '{name}' has shape {shape} with a free height or width: "
                "give the image size with --size HxW (for example --size 224x224)"
            )
        return (fixed[0], fixed[1])
    if min(size) < 1 or any(dim not in (None, want) for dim, want in zip(fixed, size, strict=True)):
        raise InputDataError(
            f"input '{name}' has shape {shape} but --size is {size[0]}x{size[1]}: "
            "drop --size or give the model's height and width"
        )
    return size


def _fixed(dim: Dim) -> int | None:
    """The dim's size when the model fixes it; None for named, unknown or non-positive dims."""
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
        return dim
    return None


def _format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ",".join("?" if dim is None else str(dim) for dim in shape) + "]"


def _check_counts(batch_size: int, limit: int | None) -> None:
    if batch_size < 1:
        raise InputDataError(f"batch size {batch_size} is not positive: give 1 or more")
    if limit is not None and limit < 1:
        raise InputDataError(f"sample limit {limit} is not positive: give 1 or more")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _list_paths(paths: Sequence[Path]) -> str:
    shown = ", ".join(str(path) for path in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
