"""Export a small, hard synthetic face set as an image folder (a stand-in for your own crops).

    python bench/synthetic_folder.py --out=runs/synth_folder \
        [--num_subjects=100 --per_subject=10 --image_size=112 --seed=0 --nohard]

Makes <out>/<class>/S<subject>_<seq>_<frame>.png: 100 subjects x 10 faces = 1,000 PNGs, labels
balanced over the 7 CK+ classes (142-143 each), each subject with at most 2 faces per class,
expression intensities in [0.25, 0.8] (--nohard: the demo's [0.5, 1]) under the usual
identity, pose, lighting and background nuisances; plus info.json (how it was made) and
faces.csv (path, label, subject, intensity of every face). No landmark files: read it with
configs/folder.py, e.g. `python cv.py --config=configs/folder.py --root=runs/cv_synth
--config.data.data_dir=runs/synth_folder`. Same flags, same bytes; an existing non-empty --out
is refused. About 20-25 s for the 1,000 faces on one CPU core.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "Folder to create (must not exist, or be empty).")
_NUM_SUBJECTS = flags.DEFINE_integer("num_subjects", 100, "Number of people (S001, S002, ...).")
_PER_SUBJECT = flags.DEFINE_integer("per_subject", 10, "Faces per person (at most 14).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 112, "Side of the square PNGs in pixels.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed: the same flags give the same files.")
_HARD = flags.DEFINE_bool("hard", True, "Weak expressions (intensity 0.25..0.8) instead of 0.5..1.")
flags.mark_flag_as_required("out")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from manet_jax.data import synthetic

    start = time.time()
    try:
        rows = synthetic.export_folder(
            _OUT.value, _NUM_SUBJECTS.value, _PER_SUBJECT.value, _SEED.value, _IMAGE_SIZE.value, _HARD.value
        )
    except (FileExistsError, ValueError) as err:
        sys.exit(f"error: {err}")
    subjects = len({r["subject"] for r in rows})
    print(
        f"wrote {len(rows)} faces of {subjects} subjects to {_OUT.value} in "
        f"{time.time() - start:.1f}s (see {synthetic.FOLDER_INFO})"
    )


if __name__ == "__main__":
    app.run(main)
