"""vae_jax: variational autoencoders in JAX/Flax, correct to the last nat."""
