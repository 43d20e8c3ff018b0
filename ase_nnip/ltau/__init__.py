"""LTAU: per-atom uncertainty from training error trajectories (Vita et al., LTAU-FF).

    calc = NNIPCalculator("model.nnip", uncertainty="model.ltau")   # or uncertainty=LTAUEstimator.load(...)
    atoms.calc = calc; atoms.get_forces()
    calc.results["force_error"]    # (N,) predicted force-error norm |ΔF| (eV/Å)
    calc.results["uncertainty"]    # (N,) P(|ΔF| > τ), τ in eV/Å (estimator.threshold)
    calc.results["ood_distance"]   # (N,) mean descriptor distance to the k nearest training atoms

Modules (one job each):

- :mod:`.confidences`  μ_M(p_i), σ_M(p_i) and per-atom CDF tables from ``error_trajectory.h5``
- :mod:`.index`        FAISS flat/HNSW index, descriptor standardisation, (de)serialisation
- :mod:`.ltau_file`    the ``.ltau`` HDF5 file
- :mod:`.build`        descriptors of the training atoms + everything above → ``.ltau``
- :mod:`.error_model`  a new atom's predicted error distribution; the distance-aware scale s(d, D) and its fit
- :mod:`.estimator`    :class:`LTAUEstimator`, the calculator's uncertainty hook
- :mod:`.evaluation`   neighbours and actual force errors of labelled data
- :mod:`.calibration`  fit/test split, ECE, Spearman, AUROC per group, reliability diagram
- :mod:`.weights`      per-atom loss weights that up-weight easy or hard atoms

Command line: ``ase-nnip ltau build | calibrate | weights``; uncertainty-aware relaxations
in :mod:`ase_nnip.workflows.relax` (``ase-nnip relax``).
"""

from ase_nnip.ltau.build import build_ltau, make_ltau_data, training_descriptors
from ase_nnip.ltau.confidences import ConfidenceError, EpochWindow, SampleConfidences, sample_confidences
from ase_nnip.ltau.estimator import LTAUEstimator
from ase_nnip.ltau.index import HNSWParams
from ase_nnip.ltau.ltau_file import LTAUData, LTAUFileError, read_ltau, write_ltau

__all__ = [
    "ConfidenceError",
    "EpochWindow",
    "HNSWParams",
    "LTAUData",
    "LTAUEstimator",
    "LTAUFileError",
    "SampleConfidences",
    "build_ltau",
    "make_ltau_data",
    "read_ltau",
    "sample_confidences",
    "training_descriptors",
    "write_ltau",
]
