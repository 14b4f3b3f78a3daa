"""Activation and gradient scale, layer by layer, at initialisation and over the first steps.

    python bench/signal_scale.py --config=configs/synthetic.py --variants=vgg,vgg_se,manet \
        --steps=0,25,100 [--config.model.kernel_init=he] [--config.model.ma_output_scale=...]

For each variant: the RMS of every ERSnet layer's output (conv and fc before their ReLU;
`pool4` = V, `attention` = what conv5_1 receives), and for every kernel the ratio
|grad| / |weight| of the cross-entropy gradient, on one fixed training batch. Then it trains
stage 2 with the config's optimizer on the config's data and repeats the measurement at the
listed steps, printing the training loss. `manet` gets the ground-truth masks (a perfect
stage 1), so what is measured is ERSnet alone. Findings: docs/training_dynamics.md.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Config file.", lock_config=True)
_VARIANTS = flags.DEFINE_list("variants", ["vgg", "vgg_se", "manet"], "Variants to measure.")
_STEPS = flags.DEFINE_string("steps", "0,25,100", "Training steps after which to measure (0 = init).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/signal_scale", "Where the data is prepared (data/).")
_LOSS_EVERY = flags.DEFINE_integer("loss_every", 25, "Print the mean training loss every this many steps.")


def layer_names(params: dict) -> list[str]:
    """ERSnet's weighted layers in forward order, as they sit in the parameter tree."""
    order = [f"conv{b}_{k}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for k in range(1, n + 1)]
    order += ["fc6", "fc7", "fc8"]
    return [n for n in order if n in params]


def measure(model, params, batch, use_masks: bool):
    """{'act': {layer: rms}, 'grad': {param path: |g|/|w|}, 'loss': float} on one batch."""
    import flax
    import jax
    import jax.numpy as jnp
    import optax

    masks = batch["masks"] if use_masks else None

    def loss_fn(ersnet):
        variables = {"params": {**params, "ersnet": ersnet}}
        out, state = model.apply(
            variables, batch["image"], masks=masks, capture_intermediates=True, mutable=["intermediates"]
        )
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"]))
        return loss, state["intermediates"]

    (loss, inter), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["ersnet"])
    inter = flax.traverse_util.flatten_dict(flax.core.unfreeze(inter), sep="/")
    rms = lambda x: float(jnp.sqrt(jnp.mean(jnp.square(jnp.asarray(x, jnp.float32)))))  # noqa: E731
    act = {}
    for path, value in inter.items():
        parts = path.split("/")
        if parts[0] != "ersnet" or parts[-1] != "__call__":
            continue
        name = "/".join(parts[1:-1]) or "logits"
        if name in ("", "logits") or name.startswith("ma_block/") or name.startswith("se_block/"):
            continue
        out = value[0]
        act[name] = rms(out[0] if isinstance(out, tuple) else out)
    # V (pool4) and what conv5_1 receives, from the sown values and one extra forward.
    act["pool4 (V)"] = rms(inter["ersnet/pool4"][0])
    v = inter["ersnet/pool4"][0]
    received = model.apply(
        {"params": {**params}}, batch["image"], masks=masks, capture_intermediates=True, mutable=["intermediates"]
    )[1]["intermediates"]
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(received), sep="/")
    attn = [k for k in flat if k.startswith("ersnet/ma_block/__call__") or k.startswith("ersnet/se_block/__call__")]
    if attn:
        out = flat[attn[0]][0]
        fused = out[0] if isinstance(out, tuple) else out
        if "se_block" in attn[0]:
            fused = v * fused[..., None, None, :]
        act["attention out"] = rms(fused)
    else:
        act["attention out"] = act["pool4 (V)"]
    flat_g = flax.traverse_util.flatten_dict(grads, sep="/")
    flat_w = flax.traverse_util.flatten_dict(params["ersnet"], sep="/")
    grad = {}
    for path, g in flat_g.items():
        if not path.endswith("kernel"):
            continue
        w_norm = float(jnp.linalg.norm(flat_w[path]))
        if w_norm > 0:  # a zero-initialised kernel (head_init='zeros') has no ratio
            grad[path[: -len("/kernel")]] = float(jnp.linalg.norm(g)) / w_norm
    return {"act": act, "grad": grad, "loss": float(loss)}


def print_table(title: str, columns: dict[str, dict], rows: list[str], fmt: str) -> None:
    print(f"\n{title}")
    print("| layer | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for r in rows:
        cells = [fmt.format(c[r]) if r in c else "—" for c in columns.values()]
        print(f"| {r} | " + " | ".join(cells) + " |")


def main(argv):
    del argv
    import jax
    import numpy as np

    from manet_jax import training
    from manet_jax.data import datasets, pipeline
    from manet_jax.models import build_model, init_variables

    base = _CONFIG.value
    steps_wanted = sorted({int(s) for s in _STEPS.value.split(",")})
    train_split, _ = datasets.load_splits(base, _WORKDIR.value)
    results = {}
    for variant in _VARIANTS.value:
        config = base.copy_and_resolve_references()
        config.model.variant = variant
        model = build_model(config.model)
        params = init_variables(model, jax.random.fold_in(jax.random.key(config.seed), 0))["params"]
        tx, _ = training.make_optimizer(config.train, 2)
        use_masks = variant == "manet"
        probe = pipeline.make_examples(
            train_split,
            np.arange(config.train.batch_size),
            None,
            model.mask_size,
            config.model.region_sizes,
            tuple(config.data.pixel_mean),
        )
        probe = {k: jax.numpy.asarray(v) for k, v in probe.items()}
        state = training.init_state(model, config.seed, 2, tx, params)

        def step_fn(state, batch, model=model, tx=tx, use_masks=use_masks):
            import jax.numpy as jnp
            import optax

            params = state["params"]
            rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

            def loss_fn(ersnet):
                out = model.apply(
                    {"params": {**params, "ersnet": ersnet}},
                    batch["image"],
                    train=True,
                    masks=batch["masks"] if use_masks else None,
                    rngs={"dropout": rng},
                )
                return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["label"]))

            loss, grads = jax.value_and_grad(loss_fn)(params["ersnet"])
            updates, opt_state = tx.update(grads, state["opt_state"], params["ersnet"])
            return {
                "params": {**params, "ersnet": optax.apply_updates(params["ersnet"], updates)},
                "opt_state": opt_state,
                "step": state["step"] + 1,
                "rng": state["rng"],
            }, loss

        step_fn = jax.jit(step_fn)
        batches = pipeline.train_batches(
            train_split,
            global_batch_size=config.train.batch_size,
            seed=config.seed,
            start_step=0,
            num_steps=max(steps_wanted),
            mask_size=model.mask_size,
            region_sizes=config.model.region_sizes,
            pixel_mean=tuple(config.data.pixel_mean),
            random_flip=config.data.random_flip,
        )
        done, losses, start = 0, [], time.time()
        per_step = {}
        if 0 in steps_wanted:
            per_step[0] = measure(model, state["params"], probe, use_masks)
        for batch in batches:
            state, loss = step_fn(state, batch)
            done += 1
            losses.append(float(loss))
            if done % _LOSS_EVERY.value == 0:
                print(
                    f"{variant} step {done}: train loss {np.mean(losses[-_LOSS_EVERY.value :]):.3f} "
                    f"({time.time() - start:.0f}s)",
                    flush=True,
                )
            if done in steps_wanted:
                per_step[done] = measure(model, state["params"], probe, use_masks)
        results[variant] = per_step
        rows_act = layer_names(params["ersnet"])
        rows_act = rows_act[:10] + ["pool4 (V)", "attention out"] + rows_act[10:]
        print_table(
            f"{variant}: activation RMS (pre-ReLU), kernel_init={config.model.kernel_init}",
            {f"step {s}": r["act"] for s, r in per_step.items()},
            rows_act,
            "{:.3g}",
        )
        grad_rows = sorted(
            {k for r in per_step.values() for k in r["grad"]},
            key=lambda k: (rows_act + [k]).index(k.split("/")[0]) if k.split("/")[0] in rows_act else 99,
        )
        print_table(
            f"{variant}: |grad| / |weight| per kernel",
            {f"step {s}": r["grad"] for s, r in per_step.items()},
            grad_rows,
            "{:.2e}",
        )
        print(f"{variant}: probe-batch loss " + ", ".join(f"step {s} {r['loss']:.3f}" for s, r in per_step.items()))


if __name__ == "__main__":
    app.run(main)
