"""Export a trained run for serving: uint8 aligned face crops in, probabilities, masks and q out.

    python export.py --workdir=runs/demo                      # all formats -> runs/demo/export
    python export.py --workdir=runs/demo --format=jax --step=latest --output=/srv/manet

The command-line face of manet_jax.export.export_run (README.md, "Export for serving");
manet_jax/export.py says what each artifact holds and how to load it back.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from manet_jax import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).")
_FORMAT = flags.DEFINE_string("format", "all", "all, or a comma-separated list of: jax, saved_model, tflite.")
_STEP = cli.define_step_flag()
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default <workdir>/export).")
_PLATFORMS = flags.DEFINE_list(
    "platforms", "cpu,cuda,tpu", "Platforms the jax and SavedModel artifacts are lowered for."
)
_FLIP_TTA = flags.DEFINE_bool("flip_tta", False, "Bake flip TTA (mean softmax of image and mirror) into the artifacts.")
_CHECK = flags.DEFINE_bool("check", True, "Load every artifact back and compare it with Run.predict.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from manet_jax import export

    formats = export.parse_formats(_FORMAT.value)  # an unknown format or platform fails before anything loads
    platforms = export.parse_platforms(_PLATFORMS.value)
    step = cli.step_value(_STEP)
    export.export_run(
        _WORKDIR.value,
        formats,
        step=step,
        output=_OUTPUT.value,
        platforms=platforms,
        flip_tta=_FLIP_TTA.value,
        check=_CHECK.value,
    )


if __name__ == "__main__":
    cli.run(main)
