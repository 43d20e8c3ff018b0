"""Loss landscapes and Fisher spectra from files to files, as ``ase-nnip landscape`` and
``ase-nnip fisher`` run them (callable from Python with the same arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from ase_nnip.landscape.landscapes import DTYPES, DatasetLoss, Landscape, LandscapeSettings, compute_landscape

if TYPE_CHECKING:
    from ase_nnip.landscape.fisher import FisherSpectrum


@dataclass
class LandscapeRun:
    """The landscape, the description of the data it was evaluated on, and the files written
    (empty on ranks other than 0)."""

    landscape: Landscape
    data: dict
    written: list[str]


def landscape_from_files(
    model_path,
    data_path,
    settings: LandscapeSettings,
    *,
    other_model_path=None,
    energy_key: str = "energy",
    forces_key: str = "forces",
    subset: str = "auto",
    max_structures: Optional[int] = None,
    output="landscape.h5",
    plot: bool = True,
    comm=None,
    log: Callable[[str], None] = lambda message: None,
) -> LandscapeRun:
    """The landscape of the model in ``model_path`` on the labelled structures of ``data_path``
    (its training split by default, ``subset``), with ``settings`` (kind ``interpolation``
    needs ``other_model_path``); rank 0 writes ``output`` (HDF5) and, with ``plot``, a PNG
    beside it. The grid options are checked before anything is loaded."""
    from ase_nnip.core.parallel import rank_and_size
    from ase_nnip.io.model_file import load_model
    from ase_nnip.landscape.files import save_landscape
    from ase_nnip.landscape.training_data import load_labelled_dataset

    rank, size = rank_and_size(comm)
    grid = settings.grid()  # bad grid options fail before any loading
    model = load_model(model_path)
    other = load_model(other_model_path) if other_model_path else None
    dataset, info = load_labelled_dataset(model, data_path, energy_key, forces_key, subset, max_structures,
                                          DTYPES[settings.dtype])
    if rank == 0:
        n = len(grid)
        points = n * {"directions": settings.directions, "plane": n, "interpolation": 1}[settings.kind]
        log(f"{settings.kind} landscape of {model_path} on {info['num_structures']} structures of {data_path} "
            f"({info['subset']}): {points} evaluations on {size} rank(s)")
    landscape = compute_landscape(model, DatasetLoss(dataset, settings.batch_size), settings, other, comm)
    landscape.provenance.update(model_file=str(model_path), other_model_file=other_model_path, data=info)
    written = []
    if rank == 0:
        save_landscape(landscape, output)
        written.append(str(output))
        if plot:
            from ase_nnip.landscape.plots import plot_landscape

            png = Path(output).with_suffix(".png")
            plot_landscape(landscape, png, title=f"{Path(model_path).name}: {settings.kind}")
            written.append(str(png))
    return LandscapeRun(landscape, info, written)


@dataclass
class FisherRun:
    """The spectrum, the description of the data it was computed on, and the files written."""

    spectrum: "FisherSpectrum"
    data: dict
    written: list[str]


def fisher_from_files(
    model_path,
    data_path,
    *,
    method: str = "auto",
    top_k: int = 20,
    loss_kind: str = "l1",
    energy_weight: Optional[float] = None,
    forces_weight: Optional[float] = None,
    dtype: str = "float64",
    max_gradient_memory_gb: float = 2.0,
    energy_key: str = "energy",
    forces_key: str = "forces",
    subset: str = "auto",
    max_structures: Optional[int] = None,
    output="fisher.h5",
    json_path=None,
    plot: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> FisherRun:
    """The Fisher information spectrum of the model in ``model_path`` on the labelled
    structures of ``data_path`` (:func:`ase_nnip.landscape.fisher.fisher_spectrum`; loss
    weights default to the model's training config); writes
    ``output`` (HDF5), with ``json_path`` its summary and eigenvalues as JSON, with ``plot``
    a PNG histogram beside ``output``."""
    import json

    from ase_nnip.core.statistics import json_ready
    from ase_nnip.io.model_file import load_model
    from ase_nnip.landscape.files import save_fisher
    from ase_nnip.landscape.fisher import fisher_spectrum, loss_for_model
    from ase_nnip.landscape.training_data import load_labelled_dataset

    model = load_model(model_path)
    loss = loss_for_model(model, loss_kind, energy_weight, forces_weight)
    dataset, info = load_labelled_dataset(model, data_path, energy_key, forces_key, subset, max_structures, DTYPES[dtype])
    log(f"Fisher spectrum of {model_path} on {info['num_structures']} structures of {data_path} ({info['subset']}), "
        f"loss {loss.kind}, w_E {loss.energy_weight:g}, w_F {loss.forces_weight:g}")
    spectrum = fisher_spectrum(model, dataset, loss, method, top_k, max_gradient_memory_gb, DTYPES[dtype])
    spectrum.provenance.update(model_file=str(model_path), data=info)
    save_fisher(spectrum, output)
    written = [str(output)]
    if json_path:
        with open(json_path, "w") as f:
            payload = {"summary": spectrum.summary(), "eigenvalues": spectrum.eigenvalues, "provenance": spectrum.provenance}
            json.dump(json_ready(payload), f, indent=2, default=str)
        written.append(str(json_path))
    if plot:
        from ase_nnip.landscape.plots import plot_fisher_histogram

        png = Path(output).with_suffix(".png")
        plot_fisher_histogram(spectrum.eigenvalues, png,
                              title=f"{Path(model_path).name}: Fisher eigenvalues ({spectrum.method})")
        written.append(str(png))
    return FisherRun(spectrum, info, written)


__all__ = ["FisherRun", "LandscapeRun", "fisher_from_files", "landscape_from_files"]
