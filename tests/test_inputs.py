"""Tests for onnx_prune.inputs: presets, image decoding, streamed batches, tensors, shape checks."""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from onnx_prune import inputs
from onnx_prune.errors import InputDataError
from onnx_prune.feeds import Feeder, SampleSource
from onnx_prune.inputs import (
    PRESETS,
    Batch,
    Preprocess,
    UnreadableImageError,
    check_input_shape,
    find_images,
    get_preset,
    image_size_for,
    iter_image_batches,
    load_image,
    open_tensor_inputs,
)
from onnx_prune.runtime import TensorSpec

DARKNET = PRESETS["darknet"]
ORANGE = (200, 100, 50)


def save(image: Image.Image, path: Path, **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def solid(
    path: Path, colour: tuple[int, int, int] = ORANGE, size: tuple[int, int] = (8, 6)
) -> Path:
    return save(Image.new("RGB", size, colour), path)


def corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not an image")
    return path


def channel_values(array: np.ndarray) -> list[float]:
    """The one value each channel holds (the image must be constant per channel)."""
    assert np.ptp(array, axis=(1, 2)).max() < 1e-6
    return [float(value) for value in array[:, 0, 0]]


# --- presets ------------------------------------------------------------------------------------

R, G, B = ORANGE
EXPECTED: dict[str, list[float]] = {
    "imagenet": [(R / 255 - 0.485) / 0.229, (G / 255 - 0.456) / 0.224, (B / 255 - 0.406) / 0.225],
    "efficientnet-lite": [(R - 127) / 128, (G - 127) / 128, (B - 127) / 128],
    "caffe": [B - 104, G - 117, R - 123],
    "caffe-mobilenet": [(B - 103.94) * 0.017, (G - 116.78) * 0.017, (R - 123.68) * 0.017],
    "darknet": [R / 255, G / 255, B / 255],
    "inception": [R / 127.5 - 1, G / 127.5 - 1, B / 127.5 - 1],
    "keras-vgg": [B - 103.939, G - 116.779, R - 123.68],
    "tf-mobilenet": [(R - 128) / 128, (G - 128) / 128, (B - 128) / 128],
    "keras-mobilenet": [R / 127.5 - 1, G / 127.5 - 1, B / 127.5 - 1],
}


def test_presets_are_the_documented_ones() -> None:
    assert set(PRESETS) == set(EXPECTED)
    assert all(name == preset.name for name, preset in PRESETS.items())
    with pytest.raises(AttributeError):
        PRESETS["imagenet"].scale = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_math_on_a_constant_colour(tmp_path: Path, name: str) -> None:
    array = load_image(solid(tmp_path / "orange.png", size=(40, 30)), PRESETS[name], (16, 16))
    assert array.dtype == np.float32
    assert array.shape == (3, 16, 16)
    np.testing.assert_allclose(channel_values(array), EXPECTED[name], rtol=1e-6, atol=1e-6)


def test_get_preset_names_the_choices() -> None:
    assert get_preset("caffe").channel_order == "BGR"
    with pytest.raises(InputDataError, match=r"unknown preprocessing preset 'vgg': choose one of"):
        get_preset("vgg")


# --- geometry -----------------------------------------------------------------------------------


def bands(path: Path, width: int, height: int) -> Path:
    """Three vertical bands: red, green, blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    pixels[:, :third, 0] = pixels[:, third : 2 * third, 1] = pixels[:, 2 * third :, 2] = 255
    return save(Image.fromarray(pixels), path)


def test_squash_resizes_to_the_net_size_without_a_crop(tmp_path: Path) -> None:
    array = load_image(
        bands(tmp_path / "bands.png", 300, 100), PRESETS["keras-mobilenet"], (30, 30)
    )
    assert array.shape == (3, 30, 30)
    red, green, blue = (array[:, 15, column] for column in (4, 15, 25))  # all three bands kept
    assert red[0] == green[1] == blue[2] == 1.0
    assert red[1] == green[0] == blue[0] == -1.0


def test_darknet_resizes_the_shorter_side_to_the_net_size_and_crops_the_centre(
    tmp_path: Path,
) -> None:
    array = load_image(bands(tmp_path / "bands.png", 300, 100), DARKNET, (50, 50))
    assert array.shape == (3, 50, 50)
    centre = array[:, :, 3:-3]  # the resized green band is exactly the crop; skip blended edges
    np.testing.assert_allclose(centre.mean(axis=(1, 2)), [0, 1, 0], atol=1e-6)


def test_crop_fraction_cuts_the_border_off(tmp_path: Path) -> None:
    # A 32x32 green square in a 2-pixel red frame: 0.875 keeps the central 28x28 of a 32-pixel
    # side, so exactly the frame goes; a crop fraction of 1.0 resizes the frame into the picture.
    framed = Image.new("RGB", (32, 32), (255, 0, 0))
    framed.paste((0, 255, 0), (2, 2, 30, 30))
    path = save(framed, tmp_path / "framed.png")
    cropped = load_image(path, PRESETS["inception"], (28, 28))
    np.testing.assert_array_equal(channel_values(cropped), [-1, 1, -1])
    assert load_image(path, DARKNET, (28, 28))[0, 0, 0] > 0.5


@pytest.mark.parametrize(("width", "height"), [(640, 480), (480, 640), (50, 50), (10, 300)])
def test_any_aspect_ratio_gives_the_requested_size(tmp_path: Path, width: int, height: int) -> None:
    path = solid(tmp_path / "any.jpg", size=(width, height))
    assert load_image(path, PRESETS["imagenet"], (224, 224)).shape == (3, 224, 224)
    assert load_image(path, DARKNET, (48, 192)).shape == (3, 48, 192)


# --- image modes --------------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    path = save(Image.new("L", (8, 8), 77), tmp_path / "grey.png")
    np.testing.assert_allclose(channel_values(load_image(path, DARKNET, (8, 8))), [77 / 255] * 3)


def test_transparent_pixels_are_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 8, 4))  # top half opaque blue, bottom half transparent
    array = load_image(save(image, tmp_path / "rgba.png"), DARKNET, (8, 8))
    np.testing.assert_allclose(array[:, 0, 0], [0, 0, 1])
    np.testing.assert_allclose(array[:, 7, 0], [1, 1, 1])


def test_half_transparent_pixels_blend_with_white(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), tmp_path / "half.png")
    expected = (255 - round(128 * 255 / 255)) / 255  # black at alpha 128 over white
    np.testing.assert_allclose(channel_values(load_image(path, DARKNET, (8, 8))), [expected] * 3)


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    palette = Image.new("RGB", (8, 8), ORANGE).quantize(colors=2)
    assert palette.mode == "P"
    plain = load_image(save(palette, tmp_path / "p.png"), DARKNET, (8, 8))
    np.testing.assert_allclose(channel_values(plain), [R / 255, G / 255, B / 255])
    keyed = load_image(save(palette, tmp_path / "pt.png", transparency=0), DARKNET, (8, 8))
    np.testing.assert_allclose(channel_values(keyed), [1, 1, 1])


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    array = load_image(save(cyan, tmp_path / "cmyk.jpg", quality=100), DARKNET, (16, 16))
    np.testing.assert_allclose(array.mean(axis=(1, 2)), [0, 1, 1], atol=0.02)


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    deep = Image.fromarray(np.full((8, 8), 100 * 257, np.uint16))
    path = save(deep, tmp_path / "deep.png")
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")
    np.testing.assert_allclose(channel_values(load_image(path, DARKNET, (8, 8))), [100 / 255] * 3)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, red left and blue right; Orientation 6 shows it turned 90 degrees
    # clockwise: 20 wide x 40 high, red on top.
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(stored, tmp_path / "rotated.jpg", exif=exif, quality=95)
    array = load_image(path, DARKNET, (40, 20))
    np.testing.assert_allclose(array[:, 2:16, :].mean(axis=(1, 2)), [1, 0, 0], atol=0.03)
    np.testing.assert_allclose(array[:, 24:38, :].mean(axis=(1, 2)), [0, 0, 1], atol=0.03)


@pytest.mark.parametrize(("suffix", "options"), [(".bmp", {}), (".webp", {"lossless": True})])
def test_bmp_and_webp(tmp_path: Path, suffix: str, options: dict[str, object]) -> None:
    path = save(Image.new("RGB", (8, 8), ORANGE), tmp_path / f"image{suffix}", **options)
    array = load_image(path, DARKNET, (8, 8))
    np.testing.assert_allclose(channel_values(array), [R / 255, G / 255, B / 255])


def test_a_corrupt_file_raises_the_unreadable_error(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*bad\.jpg \(.*\)"):
        load_image(corrupt(tmp_path / "bad.jpg"), DARKNET, (8, 8))


def test_a_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    whole = save(Image.effect_noise((64, 64), 50).convert("RGB"), tmp_path / "whole.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:300])
    with pytest.raises(UnreadableImageError, match=r"cut\.jpg"):
        load_image(cut, DARKNET, (8, 8))


# --- finding images -----------------------------------------------------------------------------


def test_find_images_searches_folders_recursively_sorted_and_case_blind(tmp_path: Path) -> None:
    for name in ["b.JPG", "a.png", "sub/c.Jpeg", "sub/deeper/d.webp", "e.BMP", "notes.txt"]:
        target = tmp_path / "photos" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    single = solid(tmp_path / "single.gif")
    found = find_images([tmp_path / "photos", single])
    relative = [path.relative_to(tmp_path).as_posix() for path in found]
    assert relative == [
        "photos/a.png",
        "photos/b.JPG",
        "photos/e.BMP",
        "photos/sub/c.Jpeg",
        "photos/sub/deeper/d.webp",
        "single.gif",  # a file named explicitly is taken whatever its extension
    ]


def test_find_images_drops_duplicates(tmp_path: Path) -> None:
    image = solid(tmp_path / "a.png")
    assert find_images([image, tmp_path, image]) == [image]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"image path .*nowhere does not exist: give image"):
        find_images([tmp_path / "nowhere"])


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures")
    with pytest.raises(InputDataError) as caught:
        find_images([tmp_path / "empty"])
    assert str(caught.value) == f"no image in {tmp_path / 'empty'}: give JPEG/PNG/BMP/WebP files"


# --- streamed image batches ---------------------------------------------------------------------


def five_images(folder: Path) -> list[Path]:
    return [solid(folder / f"{index}.png", (index * 10, 0, 0)) for index in range(5)]


def sizes(batches: list[Batch]) -> list[int]:
    return [batch.size for batch in batches]


def stream(
    paths: list[Path], batch_size: int, *, strict: bool = False, limit: int | None = None
) -> list[Batch]:
    batches = iter_image_batches(
        paths, DARKNET, (4, 4), batch_size, input_name="x", strict=strict, limit=limit
    )
    return list(batches)


def test_batches_split_in_order(tmp_path: Path) -> None:
    five_images(tmp_path)
    batches = stream([tmp_path], 2)
    assert sizes(batches) == [2, 2, 1]
    assert [Path(name).name for batch in batches for name in batch.names] == [
        f"{index}.png" for index in range(5)
    ]
    first = batches[0].arrays["x"]
    assert first.shape == (2, 3, 4, 4) and first.dtype == np.float32
    np.testing.assert_allclose(first[1, 0], np.full((4, 4), 10 / 255), rtol=1e-6)


@pytest.mark.parametrize(
    ("limit", "expected"), [(3, [2, 1]), (4, [2, 2]), (1, [1]), (9, [2, 2, 1])]
)
def test_limit_caps_the_samples(tmp_path: Path, limit: int, expected: list[int]) -> None:
    five_images(tmp_path)
    assert sizes(stream([tmp_path], 2, limit=limit)) == expected


def test_unreadable_files_are_skipped_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    solid(tmp_path / "a.png")
    corrupt(tmp_path / "b.jpg")
    solid(tmp_path / "c.png")
    corrupt(tmp_path / "d.png")  # after the last full batch: must still be counted
    with caplog.at_level(logging.WARNING, logger="onnx_prune.inputs"):
        batches = stream([tmp_path], 2)
    assert sizes(batches) == [2]
    skipped = [item.name for batch in batches for item in batch.skipped]
    assert [Path(name).name for name in skipped] == ["b.jpg", "d.png"]
    assert "cannot read image" in batches[0].skipped[0].reason
    assert sum("skipping: cannot read image" in message for message in caplog.messages) == 2


def test_strict_makes_an_unreadable_file_an_error(tmp_path: Path) -> None:
    solid(tmp_path / "a.png")
    bad = corrupt(tmp_path / "b.jpg")
    with pytest.raises(UnreadableImageError) as caught:
        stream([tmp_path], 2, strict=True)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {bad} (")
    assert message.endswith("): fix or remove it; give JPEG/PNG/BMP/WebP files")


def test_no_readable_image_is_an_error(tmp_path: Path) -> None:
    corrupt(tmp_path / "a.jpg")
    corrupt(tmp_path / "b.png")
    with pytest.raises(InputDataError) as caught:
        stream([tmp_path], 2)
    assert str(caught.value) == f"no readable image in {tmp_path}: give JPEG/PNG/BMP/WebP files"


def test_path_errors_are_raised_before_iterating(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="does not exist"):
        iter_image_batches([tmp_path / "missing"], DARKNET, (4, 4), 2, input_name="x")
    with pytest.raises(InputDataError, match="batch size 0 is not positive"):
        iter_image_batches([tmp_path], DARKNET, (4, 4), 0, input_name="x")


def test_images_are_decoded_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(20):
        solid(tmp_path / f"{index:02}.png")
    decoded: list[Path] = []
    original = inputs.load_image

    def counting(path: Path, preset: Preprocess, size: tuple[int, int]) -> np.ndarray:
        decoded.append(path)
        return original(path, preset, size)

    monkeypatch.setattr(inputs, "load_image", counting)
    batches = iter_image_batches([tmp_path], DARKNET, (4, 4), 3, input_name="x")
    assert decoded == []
    assert next(batches).size == 3
    assert len(decoded) <= 4  # one batch, plus the image that tells it is complete


# --- ready tensors ------------------------------------------------------------------------------


def test_npy_is_memory_mapped_and_sliced_in_batches(tmp_path: Path) -> None:
    data = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    np.save(tmp_path / "data.npy", data)
    tensors = open_tensor_inputs(tmp_path / "data.npy", ["x"])
    assert isinstance(tensors.arrays["x"], np.memmap)
    assert tensors.count == 5
    x = TensorSpec("x", np.dtype(np.float32), ("N", 3, 2, 2))
    batches = list(Feeder(SampleSource(tensors=tmp_path / "data.npy", batch_size=2), [x]).batches())
    assert sizes(batches) == [2, 2, 1]
    assert batches[2].names == ("data.npy[4]",)
    assert not isinstance(batches[0].arrays["x"], np.memmap)  # a batch is an ordinary array
    np.testing.assert_array_equal(np.concatenate([b.arrays["x"] for b in batches]), data)
    limited = SampleSource(tensors=tmp_path / "data.npy", batch_size=2, limit=3)
    assert sizes(list(Feeder(limited, [x]).batches())) == [2, 1]


def test_uncompressed_npz_members_are_memory_mapped(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((4, 3, 5, 5)).astype(np.float32)
    scale = np.asfortranarray(np.arange(8, dtype=np.int64).reshape(4, 2))
    arrays: dict[str, Any] = {"image": image, "gpu_0/scale": scale, "unused": np.zeros(1)}
    np.savez(tmp_path / "data.npz", **arrays)
    tensors = open_tensor_inputs(tmp_path / "data.npz", ["image", "gpu_0/scale"])
    assert all(isinstance(array, np.memmap) for array in tensors.arrays.values())
    np.testing.assert_array_equal(tensors.arrays["image"], image)
    np.testing.assert_array_equal(tensors.arrays["gpu_0/scale"], scale)
    specs = [
        TensorSpec("image", np.dtype(np.float32), ("N", 3, 5, 5)),
        TensorSpec("gpu_0/scale", np.dtype(np.int64), ("N", 2)),
    ]
    (batch,) = Feeder(SampleSource(tensors=tmp_path / "data.npz"), specs).batches()
    assert set(batch.arrays) == {"image", "gpu_0/scale"} and batch.size == 4


def test_compressed_npz_is_read_whole(tmp_path: Path) -> None:
    data = np.ones((3, 2), np.float32)
    np.savez_compressed(tmp_path / "small.npz", x=data)
    tensors = open_tensor_inputs(tmp_path / "small.npz", ["x"])
    assert not isinstance(tensors.arrays["x"], np.memmap)
    np.testing.assert_array_equal(tensors.arrays["x"], data)


def test_one_array_npz_feeds_a_one_input_model_whatever_its_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "anonymous.npz", np.zeros((2, 3), np.float32))
    assert open_tensor_inputs(tmp_path / "anonymous.npz", ["input"]).count == 2


def test_a_missing_npz_key_names_the_expected_keys(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, image=np.zeros((2, 3)), other=np.zeros((2, 1)))
    with pytest.raises(InputDataError) as caught:
        open_tensor_inputs(path, ["image", "im_info"])
    assert str(caught.value) == (
        f"{path} has no key 'im_info': the model's inputs are 'image', 'im_info' and the file "
        "holds 'image', 'other'; save it with those keys"
    )


def test_npy_for_a_multi_input_model_asks_for_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(InputDataError) as caught:
        open_tensor_inputs(path, ["a", "b"])
    assert str(caught.value) == (
        f"{path} holds one array but the model has inputs 'a', 'b': save an .npz with keys "
        "'a', 'b' (np.savez(FILE, **arrays_by_input_name))"
    )


def test_sample_counts_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, a=np.zeros((4, 3)), b=np.zeros((3, 3)))
    with pytest.raises(InputDataError) as caught:
        open_tensor_inputs(path, ["a", "b"])
    assert str(caught.value) == (
        f"{path} holds different sample counts ('a': 4, 'b': 3): give every input the same "
        "number of samples on the first axis (--batch-axis NAME=AXIS names another axis)"
    )


def test_scalars_and_empty_arrays_hold_no_sample(tmp_path: Path) -> None:
    np.save(tmp_path / "scalar.npy", np.float32(1.0))
    with pytest.raises(InputDataError, match=r"scalar\.npy holds no sample: put samples on"):
        open_tensor_inputs(tmp_path / "scalar.npy", ["x"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npy", None, r"tensor file .*missing\.npy does not exist"),
        ("data.csv", b"1,2", r"data\.csv is not \.npy or \.npz: save it with np\.save"),
        ("junk.npz", b"junk", r"cannot read .*junk\.npz as \.npz \(.*\): save it with np\.savez"),
        ("junk.npy", b"junk", r"cannot read .*junk\.npy as \.npy \(.*\): save it with np\.save"),
    ],
)
def test_bad_tensor_files(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InputDataError, match=message):
        open_tensor_inputs(tmp_path / name, ["x"])


def test_an_npz_called_npy_is_named_as_such(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 2)))
    (tmp_path / "data.npz").rename(tmp_path / "data.npy")
    with pytest.raises(InputDataError, match=r"data\.npy is an \.npz archive, not \.npy: rename"):
        open_tensor_inputs(tmp_path / "data.npy", ["x"])


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InputDataError, match=r"cannot read 'x' in .*objects\.npz"):
        open_tensor_inputs(path, ["x"])


def npy_bytes(array: np.ndarray, version: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    return buffer.getvalue()


def test_npz_member_with_extra_zip_fields_is_mapped_at_the_right_offset(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    data = np.arange(6, dtype=np.float32).reshape(3, 2)
    member = zipfile.ZipInfo("x.npy")
    member.extra = struct.pack("<HH", 0xCAFE, 4) + b"abcd"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("padding.txt", "first member, so x.npy does not start at 0")
        archive.writestr(member, npy_bytes(data, (2, 0)))
    array = open_tensor_inputs(path, ["x"]).arrays["x"]
    assert isinstance(array, np.memmap)
    np.testing.assert_array_equal(array, data)


def test_npz_member_numpy_cannot_map_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    data = np.arange(6, dtype=np.float32).reshape(3, 2)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy_bytes(data, (3, 0)))
    array = open_tensor_inputs(path, ["x"]).arrays["x"]
    assert not isinstance(array, np.memmap)
    np.testing.assert_array_equal(array, data)


# --- shapes -------------------------------------------------------------------------------------


def test_check_input_shape_accepts_symbolic_dims() -> None:
    check_input_shape("x", ["N", 3, None, "width"], (8, 3, 224, 100))
    check_input_shape("x", [-1, 3, 48, 192], (8, 3, 48, 192))


def test_check_input_shape_names_input_and_axes() -> None:
    with pytest.raises(InputDataError) as caught:
        check_input_shape("x", ["N", 3, 48, 192], (8, 3, 224, 224))
    assert str(caught.value) == (
        "input 'x' expects [N,3,48,192] (batch, channels, height, width); got [8,3,224,224]: "
        "give inputs of that shape (named dims such as N take any size)"
    )


def test_check_input_shape_explains_a_fixed_batch() -> None:
    with pytest.raises(InputDataError, match=r"got \[8,9216\]: the model fixes the batch at 1"):
        check_input_shape("fc", [1, 9216], (8, 9216))


def test_check_input_shape_rank_mismatch() -> None:
    with pytest.raises(InputDataError, match=r"expects \[N,\?,\?\] \(batch, channels, length\)"):
        check_input_shape("x", ["N", None, None], (1, 3, 4, 4))


def test_image_size_for_takes_fixed_dims_or_size() -> None:
    assert image_size_for([1, 3, 224, 224], None) == (224, 224)
    assert image_size_for(["N", 3, 48, 192], (48, 192)) == (48, 192)
    assert image_size_for(["N", 3, "H", "W"], (256, 320)) == (256, 320)
    assert image_size_for(["N", 3, 48, "W"], (48, 320)) == (48, 320)


def test_image_size_for_needs_size_for_free_dims() -> None:
    with pytest.raises(InputDataError) as caught:
        image_size_for(["N", 3, "H", "W"], None, name="images")
    assert str(caught.value) == (
        "input 'images' has shape [N,3,H,W] with a free height or width: give the image size "
        "with --size HxW (for example --size 224x224)"
    )


def test_image_size_for_refuses_a_conflicting_size() -> None:
    with pytest.raises(InputDataError) as caught:
        image_size_for(["N", 3, 48, "W"], (224, 224), name="x")
    assert str(caught.value) == (
        "input 'x' has shape [N,3,48,W] but --size is 224x224: drop --size or give the "
        "model's height and width"
    )


@pytest.mark.parametrize("shape", [[1, 1, 28, 28], ["N", 1000], [1, 3, 8, 8, 8]])
def test_image_size_for_refuses_non_image_inputs(shape: list[int | str]) -> None:
    with pytest.raises(InputDataError, match=r"not \[N,3,H,W\]: images cannot feed it; give"):
        image_size_for(shape, (28, 28))
