"""manet-jax: the Multiple Attention Network (Gan et al., IEEE Access 2020) in JAX/Flax."""

__version__ = "0.1.0"
