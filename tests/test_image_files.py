"""runtime/image_files.py: the one reader of image files, used by the runtime, mgca-eval, mgca-segment, training
and calibration; deep images are scaled to 8 bits, not clipped (issue 29, item 4)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import ImageFileError

RAMP = np.tile(np.linspace(0, 65535, 512).round().astype(np.uint16), (3, 1))  # 3 x 512, dark to white


def every_reader():
    """(name, path -> H x W x 3 uint8) of each tool's image reader."""
    from calibration.reader import read_rgb as calibration_read
    from mgca.evalsets.readers import read_image as eval_read
    from mgca.pairs import load_image
    from runtime.batch import read_image as segment_read
    from runtime.image_files import read_rgb

    return [("runtime", read_rgb), ("mgca-segment", lambda p: segment_read(str(p))), ("mgca-eval", eval_read),
            ("training", lambda p: np.asarray(load_image(p))), ("calibration", calibration_read)]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_ramp_is_scaled_not_clipped_by_every_reader(tmp_path, suffix):
    path = tmp_path / f"ramp{suffix}"
    Image.fromarray(RAMP).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    expected = np.repeat(np.rint(RAMP / 257.0).astype(np.uint8)[:, :, None], 3, axis=2)
    for name, read in every_reader():
        pixels = read(path)
        assert pixels.dtype == np.uint8 and pixels.shape == (3, 512, 3), name
        np.testing.assert_array_equal(pixels, expected, err_msg=name)  # on main: 99.6% of the pixels at 255


def test_a_float_ramp_in_0_1_is_scaled_and_other_floats_are_refused(tmp_path):
    from runtime.image_files import read_rgb

    ramp = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (2, 1))
    Image.fromarray(ramp).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(read_rgb(tmp_path / "unit.tif")[0, :, 0], np.rint(ramp[0] * 255).astype(np.uint8))
    Image.fromarray(ramp * 1000).save(tmp_path / "wide.tif")
    with pytest.raises(ImageFileError, match=r"wide.tif is a float image with values 0\.\.1000; .* 8- or 16-bit"):
        read_rgb(tmp_path / "wide.tif")


def test_8_bit_images_are_read_as_before(tmp_path):
    from runtime.image_files import read_rgb

    grey = np.tile(np.arange(256, dtype=np.uint8), (2, 1))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_rgb(Path(tmp_path / "grey.png"))[:, :, 1], grey)


def test_exif_orientation_is_applied_everywhere(sideways_photo, tmp_path, capsys):
    from calibration.reader import read_rgb as calibration_read
    from mgca.cli import segment as segment_cli
    from mgca.evalsets.readers import read_image
    from mgca.pairs import load_image

    assert load_image(sideways_photo).size == (80, 120)  # training pairs (PIL: width, height)
    assert read_image(sideways_photo).shape == (120, 80, 3)  # evaluation sets
    assert calibration_read(sideways_photo).shape == (120, 80, 3)  # calibration and parity images
    labels = tmp_path / "labels.png"
    code = segment_cli.main([str(sideways_photo), "--classes", "red,black", "--decoder", "none", "--out",
                             str(tmp_path / "overlay.png"), "--labels-out", str(labels), "--short-side", "64",
                             "--window", "64", "--stride", "32"])
    assert code == 0, capsys.readouterr().err
    assert np.asarray(Image.open(labels)).shape == (120, 80)


def test_exif_rotated_eval_image_matches_its_label(sideways_photo, tmp_path):
    from mgca.evalsets import open_dataset

    root = tmp_path / "ade"
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    shutil.copy(sideways_photo, root / "images" / "validation" / "a.jpg")
    Image.fromarray(np.ones((120, 80), np.uint8)).save(root / "annotations" / "validation" / "a.png")
    sample = open_dataset("ade20k", root)[0]
    assert sample.image.shape[:2] == sample.label.shape == (120, 80)
