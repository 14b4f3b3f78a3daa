"""PyTorch re-implementation of our three variants and two stages: the yardstick for our step.

    pip install -e '.[bench]'        # torch 2.13 CPU build
    python bench/torch_reference.py  # checks shapes and parameter counts against the Flax model

Only bench/compare.py uses it; the package and the tests never import torch. The networks are
the Flax ones layer for layer (manet_jax/models): RASnet (Table 1, Caffe's ceil pooling),
VGG16 with no attention / one SE / the MA block after pool4, fc6-fc8, and the same losses and
optimizers, so a step here does the same arithmetic as `training.make_train_step`. It is
written as a PyTorch user would write it (eager, channels-last, the MA block's N branches
as a loop of 1x1 convolutions, fused optimizers), not tuned beyond that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manet_jax.models.layers import scaled  # noqa: E402
from manet_jax.models.rasnet import RASNET_CONVS, rasnet_feature_size  # noqa: E402
from manet_jax.models.vgg import VGG16_BLOCKS  # noqa: E402


class RASnet(nn.Module):
    def __init__(self, input_size, num_regions, mask_size, width, hidden_units):
        super().__init__()
        convs, cin = [], 3
        for channels, kernel, stride, pad in RASNET_CONVS:
            convs.append(nn.Conv2d(cin, scaled(channels, width), kernel, stride, pad))
            cin = scaled(channels, width)
        self.convs = nn.ModuleList(convs)
        feat = rasnet_feature_size(input_size)
        self.fc1 = nn.Linear(cin * feat * feat, scaled(hidden_units, width))
        self.fc2 = nn.Linear(scaled(hidden_units, width), num_regions * mask_size[0] * mask_size[1])
        self.shape = (num_regions, *mask_size)

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2, 2, ceil_mode=True)  # Caffe's rounding, as caffe_max_pool
        x = F.relu(self.fc1(x.flatten(1)))
        return torch.sigmoid(self.fc2(x)).view(x.shape[0], *self.shape)


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        self.fc1 = nn.Linear(channels, max(1, channels // reduction))
        self.fc2 = nn.Linear(max(1, channels // reduction), channels)

    def forward(self, x):  # (B, C, H, W) -> gates (B, C, 1, 1)
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))
        return torch.sigmoid(s)[:, :, None, None]


class MABlock(nn.Module):
    """N branches (1x1 conv of V x mask, then SE) fused by the weight branch's softmax q."""

    def __init__(self, channels, num_regions, se_reduction, weight_pool, weight_channels, output_scale, mask_size):
        super().__init__()
        self.buffers_ = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_regions))
        self.se = nn.ModuleList(SqueezeExcite(channels, se_reduction) for _ in range(num_regions))
        self.pool = weight_pool
        self.reduce = nn.Conv2d(channels, weight_channels, 1)
        pooled = mask_size[0] // weight_pool if weight_pool > 1 else mask_size[0]
        self.fc = nn.Linear(weight_channels * pooled * pooled, num_regions)
        self.output_scale = output_scale

    def forward(self, v, masks):
        x = F.avg_pool2d(v, self.pool) if self.pool > 1 else v
        q = torch.softmax(self.fc(F.relu(self.reduce(x)).flatten(1)), -1)
        fused = 0
        for r, (buffer, se) in enumerate(zip(self.buffers_, self.se)):
            t = buffer(v * masks[:, r : r + 1])
            fused = fused + q[:, r, None, None, None] * (t * se(t))
        return fused * self.output_scale, q


class ERSnet(nn.Module):
    def __init__(self, c):
        super().__init__()
        w, self.attention = c.width_multiplier, {"vgg": "none", "vgg_se": "se", "manet": "ma"}[c.variant]
        layers, cin = [], 3
        for _block, convs, channels in VGG16_BLOCKS:
            block = []
            for _ in range(convs):
                block.append(nn.Conv2d(cin, scaled(channels, w), 3, 1, 1))
                cin = scaled(channels, w)
            layers.append(nn.ModuleList(block))
        self.blocks = nn.ModuleList(layers)
        mask = (c.input_size // 16, c.input_size // 16)
        if self.attention == "se":
            self.se_block = SqueezeExcite(cin, c.se_reduction)
        elif self.attention == "ma":
            self.ma_block = MABlock(
                cin,
                c.num_regions,
                c.se_reduction,
                c.ma_weight_pool,
                scaled(c.ma_weight_channels, w),
                c.ma_output_scale,
                mask,
            )
        fc = scaled(c.fc_units, w)
        self.fc6 = nn.Linear(cin * (c.input_size // 32) ** 2, fc)
        self.fc7 = nn.Linear(fc, fc)
        self.fc8 = nn.Linear(fc, c.num_classes)
        self.dropout = nn.Dropout(c.dropout_rate)

    def forward(self, x, masks=None):
        q = None
        for k, block in enumerate(self.blocks, start=1):
            for conv in block:
                x = F.relu(conv(x))
            x = F.max_pool2d(x, 2, 2)
            if k == 4 and self.attention == "se":
                x = x * self.se_block(x)
            elif k == 4 and self.attention == "ma":
                x, q = self.ma_block(x, masks)
        x = self.dropout(F.relu(self.fc6(x.flatten(1))))
        x = self.dropout(F.relu(self.fc7(x)))
        return self.fc8(x), q


class MANet(nn.Module):
    def __init__(self, model_config):
        super().__init__()
        c = model_config
        if c.variant == "manet":
            mask = (c.input_size // 16, c.input_size // 16)
            self.rasnet = RASnet(c.input_size, c.num_regions, mask, c.width_multiplier, c.rasnet_hidden_units)
        self.ersnet = ERSnet(c)
        self.variant = c.variant

    def forward(self, images):
        masks = None
        if self.variant == "manet":
            with torch.no_grad():  # frozen in stage 2 (the Flax model's stop_gradient)
                masks = self.rasnet(images)
        return self.ersnet(images, masks)


def make_optimizer(train_config, params, stage):
    """The config's optimizer (constant learning rate: the schedule costs nothing to time)."""
    t = train_config
    lr = float(t[f"stage{stage}_learning_rate"])
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr, momentum=t.momentum, weight_decay=t.weight_decay, fused=True)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr, betas=(t.momentum, 0.999), weight_decay=t.weight_decay, fused=True)


def make_train_step(model: MANet, config, stage: int):
    """step(images NCHW channels-last, masks, labels) -> loss; only the stage's partition learns."""
    part = model.rasnet if stage == 1 else model.ersnet
    for p in model.parameters():
        p.requires_grad_(False)
    for p in part.parameters():
        p.requires_grad_(True)
    opt = make_optimizer(config.train, list(part.parameters()), stage)
    model.train()

    def step(images, masks, labels):
        opt.zero_grad(set_to_none=True)
        if stage == 1:
            loss = torch.square(model.rasnet(images) - masks).sum((1, 2, 3)).mean()
        else:
            logits, _ = model(images)
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        return loss

    return step


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_against_flax(model_config) -> dict:
    """Parameter counts per partition and output shapes, ours vs this file's; raises if they differ."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from manet_jax.models import build_model

    flax_model = build_model(model_config)
    s = model_config.input_size
    images = jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32)
    params = jax.eval_shape(flax_model.init, jax.random.key(0), images)["params"]
    out = jax.eval_shape(flax_model.apply, {"params": params}, images)
    torch_model = MANet(model_config)
    with torch.no_grad():
        logits, q = torch_model.eval()(torch.zeros(2, 3, s, s))
    report = {}
    for part in params:
        ours = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params[part]))
        theirs = count(getattr(torch_model, part))
        report[part] = (ours, theirs)
        if ours != theirs:
            raise AssertionError(f"{model_config.variant} {part}: Flax has {ours} parameters, PyTorch {theirs}")
    if tuple(logits.shape) != out["logits"].shape:
        raise AssertionError(f"logits: Flax {out['logits'].shape}, PyTorch {tuple(logits.shape)}")
    if "region_weights" in out and tuple(q.shape) != out["region_weights"].shape:
        raise AssertionError(f"q: Flax {out['region_weights'].shape}, PyTorch {tuple(q.shape)}")
    if "masks" in out:
        masks = torch_model.rasnet(torch.zeros(2, 3, s, s))
        if tuple(masks.shape) != out["masks"].shape:
            raise AssertionError(f"masks: Flax {out['masks'].shape}, PyTorch {tuple(masks.shape)}")
    return report


if __name__ == "__main__":
    from configs import default, synthetic

    for name, config in (("demo", synthetic.get_config()), ("full", default.get_config())):
        for variant in ("vgg", "vgg_se", "manet"):
            config.model.variant = variant
            counts = check_against_flax(config.model)
            print(name, variant, {part: f"{a:,} = {b:,}" for part, (a, b) in counts.items()})
