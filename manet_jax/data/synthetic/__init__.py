"""Procedural synthetic faces for facial expression recognition: the built-in data set.

Why it exists: CK+ and RAF-DB are licence-restricted, so the out-of-the-box demo and the
tests need faces that cost nothing to ship. Every image is drawn from scratch (numpy + PIL
only, no deep-learning imports) with exact 68-point landmarks and an optional per-pixel
part-label map, so the MANet regions (Table 2) and masks (Eq. 4) can be built from it exactly
as for real data.

Classes (labels 0..6, CK+ order, see CLASS_NAMES) are told apart only by local, FACS-like
cues whose strength is an intensity drawn per example in [0.5, 1] (so classes overlap a bit;
`export_folder` writes a harder set with intensities in [0.25, 0.8]):

- anger: brows lowered and drawn together, inner ends down (AU4), vertical furrows between
  the brows, eyes narrowed (AU7), lips pressed thin (AU23/24).
- contempt: ONE lip corner raised and pulled out (AU14) with a dimple; side random.
- disgust: wrinkles across the nose bridge (AU9), upper lip raised showing the upper teeth
  (AU10), nasolabial folds, brows somewhat lowered, eyes slightly narrowed.
- fear: brows raised, flat and drawn together (AU1+2+4), central forehead lines, eyes wide
  (AU5), lips stretched sideways (AU20), mouth slightly open.
- happy: lip corners pulled up (AU12), sometimes an open smile with teeth, cheeks raised with
  lower lids pushed up and crow's feet (AU6), nasolabial folds.
- sadness: inner brow ends raised, brows oblique (AU1), lip corners down (AU15), chin
  crease (AU17), upper lids slightly drooping.
- surprise: brows raised high and arched (AU1+2), full forehead lines, eyes wide (AU5), jaw
  dropped into an open oval mouth (AU26/27).

Nuisances: identity (face width/height, jaw shape, skin tone from very dark to very light,
eye size/spacing/tilt, iris colour, nose length/width, mouth width, lip thickness, brow
thickness/colour/arch, hair style and colour, ears), pose (in-plane rotation up to +-15 deg
about the face centre, scale 0.85..1.1, shift up to +-8% of S), lighting (brightness,
contrast, colour cast, linear illumination gradient in a random direction, gaussian noise)
and a cluttered background (blotches, stripes or grids, random shapes and face-part-like
distractors -- eyes, brow bars, mouths -- placed outside the face oval).

Layout at the default pose (fractions of the image size S): eye line ~0.40, nose tip ~0.60,
mouth ~0.75, chin ~0.92, face oval 0.58..0.70 S wide -- like an aligned face crop.

Coordinates: landmarks are (x, y) = (column, row) in the continuous image frame: the image
covers [0, S] x [0, S] and pixel (r, c) has its centre at (c + 0.5, r + 0.5). The 68 points
follow iBUG-300W as seen in the image (0-16 jaw from image-left to image-right, 17-21 brow on
the image-left (17 outer), 22-26 brow on the image-right (26 outer), 27-30 nose bridge to
tip, 31-35 nostril base, 36-41 eye on the image-left (36 outer, 39 inner corner), 42-47 eye on
the image-right (42 inner, 45 outer), 48-59 outer lip (48/54 corners, 51 top, 57 bottom),
60-67 inner lip). They come from the very polygons that are drawn, after the pose transform.
All points lie on drawn features (within a pixel): jaw on the face outline, brows on the brow
bands, eye points on the lid contours, 30 on the nose tip, 31/35 on the alar wings, 32/34 on
the nostrils, 33 on the columella, lip points on the lip contours. Only 27-29 (the bridge
midline, where nothing is drawn) are anatomical estimates.

Images are drawn at 2x and box-downsampled (antialiasing); the part map is drawn at 1x from
the same polygons, so it agrees with the image and the landmarks to about one pixel.

Modules: params (classes, part codes, the `Identity` and `Expression` records and their
sampling), geometry (where each part lies, and its landmarks), draw (canvas, background,
features), faces (generate_face, generate_split), export (export_folder: an image folder).
"""

from manet_jax.data.synthetic.export import FOLDER_FACES, FOLDER_INFO, export_folder, folder_plan
from manet_jax.data.synthetic.faces import contact_sheet, generate_face, generate_split
from manet_jax.data.synthetic.params import (
    CLASS_NAMES,
    DEMO_INTENSITY,
    HARD_INTENSITY,
    NUM_CLASSES,
    NUM_LANDMARKS,
    PART_BACKGROUND,
    PART_BROW,
    PART_DETAIL,
    PART_EYE,
    PART_HAIR,
    PART_MOUTH,
    PART_NAMES,
    PART_NOSE,
    PART_SKIN,
    Expression,
    Identity,
    identity_for,
    sample_expression,
    sample_identity,
)

__all__ = [
    "CLASS_NAMES",
    "DEMO_INTENSITY",
    "FOLDER_FACES",
    "FOLDER_INFO",
    "HARD_INTENSITY",
    "NUM_CLASSES",
    "NUM_LANDMARKS",
    "PART_BACKGROUND",
    "PART_BROW",
    "PART_DETAIL",
    "PART_EYE",
    "PART_HAIR",
    "PART_MOUTH",
    "PART_NAMES",
    "PART_NOSE",
    "PART_SKIN",
    "Expression",
    "Identity",
    "contact_sheet",
    "export_folder",
    "folder_plan",
    "generate_face",
    "generate_split",
    "identity_for",
    "sample_expression",
    "sample_identity",
]
