"""Import pretrained VGG16 weights (VGG-Face, ImageNet) into our params, exactly.

The paper initialises ERSnet's conv layers from VGG-Face. The weights circulate in four
layouts, each with its own axis order, input channel order and flatten order before fc6;
`load` converts each to ours (HWIO kernels, RGB input, (h, w, c) flatten) so the imported
network computes the same activations as the original. See docs/pretrained.md.

Formats (`fmt`), one reader module each:
  keras_vggface   rcmalli keras-vggface HDF5 (layer names conv1_1 .. fc8), BGR input   keras_h5
  keras_imagenet  Keras applications VGG16 HDF5 (block1_conv1 .. predictions), BGR input keras_h5
  matconvnet      MatConvNet SimpleNN / DagNN .mat (vgg-face.mat, vgg_face.mat), RGB    matconvnet
  pytorch         state_dict .pth/.pt (vgg_face_dag.pth: conv1_1.weight ..), RGB input  torch_pth

Every reader returns a common.Source (layer name -> lazy loader, pixel mean, detail);
sniff.open_source picks the reader from the file's first bytes; importer.load does the rest
(convert.py for the layouts) and fills the one PretrainedReport.

Nothing here downloads anything, and .pth files are read by a restricted unpickler
(torch_pickle.py) that only rebuilds tensors: torch is not needed and no code from the file
is ever executed.
"""

from manet_jax.pretrained.common import (
    ALL_LAYERS,
    CONV_LAYERS,
    DEFAULT_MAX_BYTES,
    FC_LAYERS,
    FORMAT_CHANNELS,
    FORMAT_MEAN_RGB,
    FORMATS,
    IMAGENET_CAFFE_MEAN_RGB,
    PretrainedError,
)
from manet_jax.pretrained.importer import init_from_config, load, load_pretrained
from manet_jax.pretrained.report import PretrainedReport

__all__ = [
    "ALL_LAYERS",
    "CONV_LAYERS",
    "DEFAULT_MAX_BYTES",
    "FC_LAYERS",
    "FORMATS",
    "FORMAT_CHANNELS",
    "FORMAT_MEAN_RGB",
    "IMAGENET_CAFFE_MEAN_RGB",
    "PretrainedError",
    "PretrainedReport",
    "init_from_config",
    "load",
    "load_pretrained",
]
