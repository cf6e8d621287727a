"""score_jax: SCoRe self-correction training in JAX/Flax."""
