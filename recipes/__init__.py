"""Recipe helpers: the hydra command lines behind run_*.sh, composed in Python so tests can check them."""
