"""The studies layer: multi-model experiments built on both packages (ase_nnip and
md_harness). Nothing in either package imports it (tests/test_architecture.py).

- :mod:`.compare`          loss entropy, Fisher summary, RMSEs and MD stability of several
  models side by side, each metric rank-correlated with stability
- :mod:`.rank_statistics`  Spearman with bootstrap intervals, permutation nulls and the partial
  correlation at fixed force error
- :mod:`.cli`              ``md-harness compare`` (joins md-harness through an entry point)
- :mod:`.water_report`     tables and figures of the Adam-versus-EKF water study
- :mod:`.jobs`             the resumable job runner of the study drivers in ``examples/*/study``
"""
