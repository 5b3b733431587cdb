"""The jax engine: C Keras models of one architecture trained at once in one JAX program (Keras's
own stateless train_step in one jax.jit program, lax.scan over batches and epochs)."""
