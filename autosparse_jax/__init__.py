"""autosparse_jax: pruning at initialization learned from iterative rewind pruning."""
