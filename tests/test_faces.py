"""Face detection and 68 landmarks on a real photo shipped with scikit-image (no download):
hand-labelled positions, the alignment template, mirroring, two faces, odd inputs."""

import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from manet_jax import faces, regions
from manet_jax.data import align
from manet_jax.predict import read_photo

# Hand-labelled on skimage.data.astronaut() (512 x 512, its face zoomed 3x in an image
# viewer), in the continuous pixel frame: pupils, nose tip, mouth corners, and the face's box
# from cheek to cheek and from the brows to the chin (x, y, w, h).
HAND_LEFT_PUPIL, HAND_RIGHT_PUPIL = (203.5, 102.0), (247.0, 103.5)
HAND_NOSE_TIP = (225.0, 124.5)
HAND_MOUTH_CORNERS = ((205.0, 140.0), (244.0, 140.0))
HAND_FACE_BOX = (182, 90, 88, 85)


@pytest.fixture(scope="module")
def detector():
    return faces.DlibDetector()


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()


@pytest.fixture(scope="module")
def face(detector, photo):
    found = detector.detect(photo)
    assert len(found) == 1
    return found[0]


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def test_the_astronaut_has_one_face_where_a_person_sees_it(face):
    assert isinstance(face.box, tuple) and all(isinstance(v, int) for v in face.box)
    assert iou(face.box, HAND_FACE_BOX) > 0.6
    assert face.score > 0.5
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    p = face.landmarks
    assert np.linalg.norm(p[36:42].mean(0) - HAND_LEFT_PUPIL) < 4  # eye centre = mean of its contour
    assert np.linalg.norm(p[42:48].mean(0) - HAND_RIGHT_PUPIL) < 4
    assert np.linalg.norm(p[30] - HAND_NOSE_TIP) < 5
    assert np.linalg.norm(p[48] - HAND_MOUTH_CORNERS[0]) < 5
    assert np.linalg.norm(p[54] - HAND_MOUTH_CORNERS[1]) < 5
    x, y, w, h = face.box  # every point on the face, near its box
    assert np.all(p[:, 0] > x - 10) and np.all(p[:, 0] < x + w + 10)
    assert np.all(p[:, 1] > y - 15) and np.all(p[:, 1] < y + h + 15)


def test_after_alignment_eyes_and_nose_sit_on_the_template(face, photo):
    spec = align.AlignSpec()
    crop, aligned, _ = align.align_face(photo, face.landmarks, "ibug68", spec)
    assert crop.shape == (224, 224, 3)
    got, want = align.ibug68_to_five(aligned), align.ibug68_to_five(align.template_68(224))
    distances = np.linalg.norm(got - want, axis=-1)
    assert np.all(distances[:3] < 3), distances  # eye centres, nose tip (mouth corners: she smiles)


def test_a_mirrored_photo_gives_mirrored_landmarks(detector, face, photo):
    (mirrored,) = detector.detect(photo[:, ::-1])
    width = photo.shape[1]
    expected = regions.mirror_68(face.landmarks, width)  # x -> W - x, left/right indices swapped
    assert np.abs(mirrored.landmarks - expected).max() <= 2.0
    assert np.abs(mirrored.landmarks - expected).mean() < 0.5
    x, y, w, h = face.box
    assert abs(mirrored.box[0] - (width - x - w)) <= 2 and abs(mirrored.box[1] - y) <= 2


def test_two_faces_side_by_side_come_left_to_right(detector, face, photo):
    crop = photo[30:230, 130:320]  # the face with a margin: 200 x 190
    canvas = np.full((260, 460, 3), 200, np.uint8)
    canvas[30:230, 20:210] = crop  # original on the left
    canvas[30:230, 250:440] = crop[:, ::-1]  # its mirror image on the right
    left, right = detector.detect(canvas)
    offset = np.array([20 - 130, 30 - 30], np.float32)
    assert np.abs(left.landmarks - (face.landmarks + offset)).max() <= 1.0
    mirror_in_crop = regions.mirror_68(face.landmarks - [130, 30], 190)
    assert np.abs(right.landmarks - (mirror_in_crop + [250, 30])).max() <= 2.0
    assert left.box[0] + left.box[2] < 230 < right.box[0]


@pytest.mark.parametrize(
    "image",
    [
        np.full((300, 400, 3), 128, np.uint8),
        np.zeros((300, 300), np.uint8),
        np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8),
        np.zeros((1, 1, 3), np.uint8),
    ],
    ids=["grey-blank", "black-grey", "tiny", "one-pixel"],
)
def test_blank_and_tiny_images_have_no_face(detector, image):
    assert detector.detect(image) == []


def test_grey_rgba_and_16_bit_versions_still_give_the_face(detector, face, photo, tmp_path):
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    deep = photo.astype(np.uint16) * 257  # 16-bit RGB, the same picture
    for name, image in [("grey", grey), ("grey (H, W, 1)", grey[..., None]), ("rgba", rgba), ("16-bit", deep)]:
        (found,) = detector.detect(image)
        assert np.abs(found.landmarks - face.landmarks).max() <= 3, name
    # and as files: 16-bit grey PNG, RGBA PNG
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    for name in ("deep.png", "rgba.png"):
        image = read_photo(tmp_path / name)
        assert image.shape == photo.shape and image.dtype == np.uint8
        assert len(detector.detect(image)) == 1, name


def test_exif_orientation_is_honoured(photo, tmp_path):
    stored = np.rot90(photo)  # stored turned 90 degrees counter-clockwise ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and tagged "rotate 90 clockwise to display"
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "turned.png", exif=exif)
    np.testing.assert_array_equal(read_photo(tmp_path / "turned.png"), photo)
    # data sets whose landmarks index the stored pixels read them as stored
    np.testing.assert_array_equal(align.load_image(tmp_path / "turned.png", exif_orientation=False), stored)


def test_an_unreadable_exif_block_leaves_the_picture_as_stored(photo, tmp_path, monkeypatch):
    import struct

    from PIL import ImageOps

    def mangled(image):  # what Pillow raised on one fuzzed EXIF header
        raise struct.error("required argument is not an integer")

    Image.fromarray(photo).save(tmp_path / "photo.png")
    monkeypatch.setattr(ImageOps, "exif_transpose", mangled)
    np.testing.assert_array_equal(read_photo(tmp_path / "photo.png"), photo)


def test_a_corrupt_file_is_named(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(align.ImageDecodeError, match="broken.jpg"):
        read_photo(broken)
    with pytest.raises(align.ImageDecodeError, match="missing.png"):
        read_photo(tmp_path / "missing.png")


def test_tiny_files_are_read_for_photos_but_refused_for_training_data(tmp_path):
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "tiny.png")
    assert read_photo(tmp_path / "tiny.png").shape == (10, 12, 3)
    with pytest.raises(align.ImageDecodeError, match="tiny.png.*at least 32 px"):
        align.load_image(tmp_path / "tiny.png")


def test_other_dtypes_are_refused(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))


def test_missing_packages_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[faces\]'"):
        faces.DlibDetector()
    monkeypatch.setattr(faces.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"face_recognition_models.*pip install -e '\.\[faces\]'"):
        faces.landmark_model_path()


def test_the_model_file_is_found_without_importing_its_package():
    path = faces.landmark_model_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 50e6
    assert "face_recognition_models" not in sys.modules
    assert isinstance(faces.DlibDetector(), faces.FaceDetector)  # the protocol


def test_face_json_is_plain(face):
    record = face.to_json()
    assert record["box"] == list(face.box) and len(record["landmarks"]) == 68
