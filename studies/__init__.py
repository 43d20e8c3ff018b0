"""The studies layer: multi-model experiments built on both packages (ase_nnip and
md_harness). Nothing in either package imports it (tests/test_architecture.py)."""
