"""Data sets and input pipelines. Never imports manet_jax.models."""
