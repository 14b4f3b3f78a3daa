"""TFDS builders for CK+ and RAF-DB: the user's unpacked archives (`manual_dir`) -> aligned crops.

Each example holds the aligned uint8 RGB crop, the source's landmarks moved into the crop,
the paper's 8 points, the label, the subject id and the source file. Alignment parameters
are part of the builder config (its name encodes them), so a different template or size is
a different, separately cached data set. Usable on their own:

    import tensorflow_datasets as tfds
    from manet_jax.data import tfds_builders
    builder = tfds_builders.CkPlusAligned(data_dir='~/tensorflow_datasets')
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir='/data/CK+'))
    ds = builder.as_dataset(split='train')

Training (train.py) does not use them: it reads the same records with the same per-example
functions (ckplus/rafdb.load_example) straight into memory-mappable arrays (data/datasets.py),
so both routes give the same examples (tests/test_real_data.py checks it by name).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from manet_jax.data import align, ckplus, datasets, rafdb


@dataclasses.dataclass
class AlignedFacesConfig(tfds.core.BuilderConfig):
    """How faces are aligned (align.AlignSpec) plus the RAF-DB source options."""

    size: int = 224
    face_box: tuple = align.DEFAULT_FACE_BOX
    transform: str = "similarity"
    points: str = "rigid"
    raf_source: str = "original"
    raf_landmarks: str = "manual5"
    raf37_to_8: tuple = ()

    @property
    def spec(self) -> align.AlignSpec:
        return align.AlignSpec(self.size, tuple(self.face_box), self.transform, self.points)


def make_config(spec: align.AlignSpec, **raf) -> AlignedFacesConfig:
    """A builder config named like the prepared cache (datasets.cache_name): one per setting."""
    return AlignedFacesConfig(
        name=datasets.cache_name(spec, **raf),
        size=spec.size,
        face_box=tuple(spec.face_box),
        transform=spec.transform,
        points=spec.points,
        description=f"aligned faces: {spec.describe()}",
        **raf,
    )


def make_builder(builder_cls, spec: align.AlignSpec, data_dir, **raf):
    """A builder for `spec`: the class's own config when the settings match one, else a custom one."""
    config = make_config(spec, **raf)
    known = {c.name for c in builder_cls.BUILDER_CONFIGS}
    return builder_cls(config=config.name if config.name in known else config, data_dir=str(data_dir))


def _features(size: int, num_landmarks: int, class_names) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(size, size, 3)),
            "landmarks": tfds.features.Tensor(shape=(num_landmarks, 2), dtype=np.float32),
            "landmarks8": tfds.features.Tensor(shape=(8, 2), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=list(class_names)),
            "subject_id": tfds.features.Scalar(dtype=np.int32),
            "name": tfds.features.Text(),
        }
    )


class CkPlusAligned(tfds.core.GeneratorBasedBuilder):
    """CK+: last 3 frames of the 327 labelled sequences, aligned with their 68 landmarks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ckplus.MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [make_config(align.AlignSpec())]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=_features(self.builder_config.size, 68, ckplus.CLASS_NAMES),
            supervised_keys=("image", "label"),
            homepage="https://www.jeffcohn.net/Resources/",
            citation="Lucey et al., The Extended Cohn-Kanade Dataset (CK+), CVPR Workshops 2010.",
        )

    def _split_generators(self, dl_manager):
        # No official split: folds come from subject ids (manet_jax.data.folds).
        return {"train": self._generate_examples(ckplus.records(dl_manager.manual_dir))}

    def _generate_examples(self, records):
        spec = self.builder_config.spec
        for record in records:
            yield record.name, ckplus.load_example(record, spec)


class RafDbAligned(tfds.core.GeneratorBasedBuilder):
    """RAF-DB basic: the published train/test split, aligned with the 5 manual landmarks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = rafdb.MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [make_config(align.AlignSpec(), raf_source="original", raf_landmarks="manual5")]

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        num, _ = rafdb.landmark_layout(c.raf_source, c.raf_landmarks)
        return self.dataset_info_from_configs(
            features=_features(c.size, num, rafdb.CLASS_NAMES),
            supervised_keys=("image", "label"),
            homepage="http://www.whdeng.cn/raf/model1.html",
            citation="Li, Deng and Du, Reliable Crowdsourcing and Deep Locality-Preserving Learning for "
            "Expression Recognition in the Wild, CVPR 2017.",
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        records = rafdb.records(dl_manager.manual_dir, c.raf_source, c.raf_landmarks)
        return {split: self._generate_examples([r for r in records if r.split == split]) for split in ("train", "test")}

    def _generate_examples(self, records):
        c = self.builder_config
        for record in records:
            yield record.name, rafdb.load_example(record, c.spec, c.raf_landmarks, c.raf37_to_8)


def landmark_scheme(builder) -> str:
    """The scheme of the builder's `landmarks` feature (see align.SCHEMES)."""
    if isinstance(builder, CkPlusAligned):
        return "ibug68"
    c = builder.builder_config
    return rafdb.landmark_layout(c.raf_source, c.raf_landmarks)[1]
