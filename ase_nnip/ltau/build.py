"""Building a ``.ltau`` file: confidences from the trajectories, descriptors from the model,
and the search index over them (``ase-nnip ltau build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ase_nnip.defaults import DEFAULT_EVAL_BATCH_SIZE
from ase_nnip.ltau.confidences import CDF_GRID, ConfidenceError, EpochWindow, SampleConfidences, sample_confidences
from ase_nnip.ltau.index import HNSWParams, Standardizer, build_index, index_type, serialize_index
from ase_nnip.ltau.ltau_file import LTAUData, write_ltau
from ase_nnip.errors import InputError

#: k for molecules such as 3BPA (paper, section 4.1: k = 2 calibrates the 300 K test set).
DEFAULT_K = 2


def make_ltau_data(
    confidences: SampleConfidences,
    descriptors: np.ndarray,
    model_fingerprint: str,
    k: int = DEFAULT_K,
    index: str = "auto",
    standardize: bool = False,
    hnsw: HNSWParams = HNSWParams(),
    threads: Optional[int] = 1,
) -> LTAUData:
    """Assemble the ``.ltau`` contents from confidences and the matching (N, d) descriptors."""
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[0] != confidences.num_atoms:
        raise InputError(
            f"descriptors have shape {descriptors.shape} but there are {confidences.num_atoms} training atoms"
        )
    if not 1 <= int(k) <= confidences.num_atoms:
        raise InputError(f"k must be between 1 and the {confidences.num_atoms} training atoms, got {k}")
    standardizer = Standardizer.fit(descriptors) if standardize else None
    searchable = standardizer(descriptors) if standardizer is not None else descriptors
    faiss_index = build_index(searchable, index, hnsw, threads)
    return LTAUData(
        confidences=confidences,
        descriptors=descriptors,
        model_fingerprint=model_fingerprint,
        k=int(k),
        index_type=index_type(faiss_index),
        index_data=serialize_index(faiss_index),
        hnsw=hnsw,
        standardizer=standardizer,
    )


def training_descriptors(model, confidences: SampleConfidences, data_file=None, batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> np.ndarray:
    """Descriptors (N, d) of the training atoms, in the trajectory's atom order.

    The structures are the frames ``structure_index`` of ``data_file`` (default: the file
    named in the trajectories); every atom is matched by (structure_index, atom_index) and
    its element is checked against the trajectory's.
    """
    from ase_nnip.data import GraphDataset, LabelKeys, load_structures
    from ase_nnip.metrics import predict_dataset
    from ase_nnip.models.base import model_dtype

    data_file = data_file or confidences.source.get("data_file")
    if not data_file:
        raise ConfidenceError("the trajectories name no training data file: pass it (--data)")
    if not Path(data_file).exists():
        raise ConfidenceError(f"training data file {data_file} not found: pass its current location (--data)")
    frames = np.unique(confidences.structure_index)
    structures = load_structures(data_file, LabelKeys(energy=None, forces=None))
    if frames[-1] >= len(structures):
        raise ConfidenceError(
            f"the trajectories use frame {int(frames[-1])} but {data_file} has only {len(structures)} frames: "
            "is it the file the models were trained on?"
        )
    selected = [structures[int(i)] for i in frames]
    for s in selected:
        model.check_atomic_numbers(s.atoms.numbers)
    dataset = GraphDataset.from_structures(selected, model.cutoff, dtype=model_dtype(model))
    predictions = predict_dataset(model, dataset, batch_size, descriptors=True)

    # Row of each (structure, atom) in the dataset-order descriptor array.
    sizes = np.array([len(s.atoms) for s in selected], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot = np.searchsorted(frames, confidences.structure_index)
    if np.any(confidences.atom_index >= sizes[slot]):
        bad = int(np.argmax(confidences.atom_index >= sizes[slot]))
        raise ConfidenceError(
            f"training atom {int(confidences.atom_index[bad])} of frame {int(confidences.structure_index[bad])} "
            f"does not exist in {data_file}: is it the file the models were trained on?"
        )
    rows = offsets[slot] + confidences.atom_index
    numbers = np.concatenate([s.atoms.numbers for s in selected])[rows]
    if not np.array_equal(numbers, confidences.atomic_number):
        bad = int(np.argmax(numbers != confidences.atomic_number))
        raise ConfidenceError(
            f"{data_file} frame {int(confidences.structure_index[bad])} atom {int(confidences.atom_index[bad])} "
            f"is element {int(numbers[bad])}, the trajectories say {int(confidences.atomic_number[bad])}: "
            "is it the file the models were trained on?"
        )
    return predictions.descriptors[rows]


def build_ltau(
    model,
    trajectories: Sequence,
    output=None,
    data_file=None,
    atol: Optional[float] = None,
    rtol: float = 0.0,
    window: EpochWindow = EpochWindow(),
    k: int = DEFAULT_K,
    index: str = "auto",
    standardize: bool = False,
    hnsw: HNSWParams = HNSWParams(),
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    cdf_grid=CDF_GRID,
    threads: Optional[int] = 1,
) -> LTAUData:
    """Everything of ``ase-nnip ltau build``: returns the contents and writes them to
    ``output`` when given. ``model`` is a loaded model (its fingerprint is recorded)."""
    from ase_nnip.io.model_file import model_fingerprint

    confidences = sample_confidences(trajectories, atol, rtol, window, cdf_grid)
    descriptors = training_descriptors(model, confidences, data_file, batch_size)
    data = make_ltau_data(confidences, descriptors, model_fingerprint(model), k, index, standardize, hnsw, threads)
    if output is not None:
        write_ltau(data, output)
    return data
