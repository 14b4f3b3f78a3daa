"""PretrainedReport: what an import did, the one report every format shares.

Layers whose shapes do not fit are listed by param_match (the mismatch report of checkpoint
restores too), path by path in our layout: 'fc8/kernel: file (4096, 2622) float32 vs
expected (4096, 7) float32'.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from manet_jax import param_match
from manet_jax.preprocess import VGGFACE_MEAN_RGB


@dataclasses.dataclass
class PretrainedReport:
    """What load_pretrained did. Layer names are ours (conv1_1 .. fc8) unless said otherwise.

    loaded: replaced in the params; missing: requested but not in the file; skipped: in the
    file but not requested; unexpected: weights in the file that are no VGG16 layer (names as
    in the file); mismatched: param_match's report of the requested layers whose shapes do
    not fit ours ('fc8/kernel': (file, ours), in our layout where the file's could be
    converted), each kept as ours.
    """

    path: str
    format: str
    detail: str
    requested: tuple[str, ...]
    loaded: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    mismatched: param_match.Report = dataclasses.field(default_factory=lambda: param_match.compare({}, {}))
    skipped: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    pixel_mean_rgb: tuple[float, float, float] = VGGFACE_MEAN_RGB
    expected_mean_rgb: tuple[float, float, float] = VGGFACE_MEAN_RGB  # what our input subtracts
    file_channel_order: str = "RGB"
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def mismatched_layers(self) -> list[str]:
        """Names of the layers kept as ours because their shapes do not fit, in file order."""
        report = self.mismatched
        paths = [*report.mismatched, *report.missing, *report.unexpected]
        return list(dict.fromkeys(p.split("/")[0] for p in paths))

    @property
    def mean_matches_preprocess(self) -> bool:
        return bool(np.allclose(self.pixel_mean_rgb, self.expected_mean_rgb, atol=1e-3))

    def summary(self) -> str:
        def names(xs):
            return " ".join(xs) if xs else "-"

        mean = ", ".join(f"{v:.4f}" for v in self.pixel_mean_rgb)
        lines = [
            f"==== pretrained weights: {self.path}",
            f"  format      : {self.format} ({self.detail})",
            f"  requested   : {names(self.requested)}",
            f"  LOADED ({len(self.loaded)}/{len(self.requested)}): {names(self.loaded)}",
            f"  missing     : {names(self.missing)}",
            "  mismatched  : " + ("-" if not self.mismatched else f"{names(self.mismatched_layers)} (kept ours)"),
            *(f"    {line}" for line in self.mismatched.format("", found="file").splitlines()[1:]),
            f"  skipped     : {names(self.skipped)} (in the file, not requested)",
            f"  unexpected  : {names(self.unexpected)} (in the file, not VGG16 layers)",
            "  input       : "
            + (
                "file trained on BGR; conv1_1 input channels reversed for our RGB input"
                if self.file_channel_order == "BGR"
                else "file trained on RGB, as our pipeline feeds"
            ),
            f"  pixel mean  : RGB ({mean})",
        ]
        if not self.mean_matches_preprocess:
            ours = ", ".join(f"{v:.4f}" for v in self.expected_mean_rgb)
            lines.append(
                f"  WARNING     : these weights were trained with mean RGB ({mean}) but the input "
                f"pipeline subtracts ({ours}); set --config.data.pixel_mean='({mean})' to match"
            )
        if self.missing or self.mismatched:
            lines.append("  WARNING     : not every requested layer was loaded (see missing / mismatched)")
        lines += [f"  note        : {n}" for n in self.notes]
        return "\n".join(lines)
