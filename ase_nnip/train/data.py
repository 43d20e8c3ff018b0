"""Training data: read, split, corrupt (label noise), build graphs, resolve the model config.

Done once per run and shared by all ensemble members (same split, same noisy labels).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols

from ase_nnip.data import GraphDataset, LabelKeys, Structure, load_structures, split_indices
from ase_nnip.data.dataset import DatasetError
from ase_nnip.models.base import DTYPES
from ase_nnip.data.statistics import fit_reference_energies, force_component_std, reference_energies_from_file
from ase_nnip.models import config_from_data, model_class
from ase_nnip.models.base import normalize_species
from ase_nnip.train.atom_weights import atom_weights_for_dataset
from ase_nnip.train.config import TrainConfig
from ase_nnip.train.loss import AtomWeights



@dataclass
class TrainingData:
    """Everything the members of one run share.

    structures: all frames of ``data.train_file`` with their original labels.
    train / val: graph datasets (training forces possibly noisy), structures in increasing
    index. model_config: the resolved config passed to ``build_model``.
    sigma_dft: std of all force components of train_file (eV/Å).
    """

    structures: list[Structure]
    train_indices: np.ndarray
    val_indices: np.ndarray
    train: GraphDataset
    val: Optional[GraphDataset]
    model_config: dict
    sigma_dft: float
    atom_weights: Optional[AtomWeights]
    dtype: torch.dtype


def add_force_noise(
    structures: Sequence[Structure], sigma: float, sigma_dft: float, seed: int
) -> list[Structure]:
    """Copies of ``structures`` with N(0, (σ·σ_DFT)²) added to every force component (eV/Å)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in structures:
        noise = rng.normal(0.0, sigma * sigma_dft, size=np.shape(s.forces))
        out.append(replace(s, forces=np.asarray(s.forces) + noise))
    return out


def model_cutoff(model_config: dict) -> float:
    """The model's cutoff (Å): ``cutoff_A`` from the config, else the model type's default."""
    if "cutoff_A" in model_config:
        return float(model_config["cutoff_A"])
    defaults = {f.name: f.default for f in dataclasses.fields(model_class(model_config).config_class)}
    return float(defaults["cutoff_A"])


def resolve_reference_energies(mode: str, structures, species, energy_key: str) -> dict:
    if mode == "none":
        return {}
    if mode == "fit":
        return fit_reference_energies(structures, species)
    energies = reference_energies_from_file(mode, energy_key)
    missing = [s for s in species if s not in energies]
    if missing:
        raise DatasetError(f"reference energies file {mode} has no isolated-atom energy for {missing}")
    return {s: energies[s] for s in species}


def prepare_training_data(config: TrainConfig) -> TrainingData:
    d = config.data
    keys = LabelKeys(energy=d.energy_key, forces=d.forces_key, stress=d.stress_key)
    structures = load_structures(d.train_file, keys)
    train_idx, val_idx = split_indices(len(structures), d.n_train, d.n_val, d.split_seed)
    train_structures = [structures[k] for k in train_idx]
    val_structures = [structures[k] for k in val_idx]

    model_config = dict(config.model)
    data_species = sorted({chemical_symbols[int(z)] for s in structures for z in s.atoms.numbers})
    species = normalize_species(model_config.get("species") or data_species)
    unknown = sorted(set(data_species) - set(species))
    if unknown:
        raise DatasetError(f"{d.train_file} contains element(s) {unknown} that are not in model.species {species}")
    model_config["species"] = species
    if "reference_energies_eV" not in model_config:
        model_config["reference_energies_eV"] = resolve_reference_energies(
            d.reference_energies, train_structures, species, d.reference_energies_key
        )
    elif d.reference_energies != "none":
        raise DatasetError("give reference energies either as data.reference_energies or model.reference_energies_eV")

    sigma_dft = force_component_std(structures)
    if d.force_noise_sigma > 0:
        seed = d.split_seed if d.noise_seed is None else d.noise_seed
        train_structures = add_force_noise(train_structures, d.force_noise_sigma, sigma_dft, seed)

    dtype = DTYPES[config.training.dtype]
    cutoff = model_cutoff(model_config)
    train = GraphDataset.from_structures(train_structures, cutoff, dtype=dtype)
    val = GraphDataset.from_structures(val_structures, cutoff, dtype=dtype) if val_structures else None
    model_config = config_from_data(model_config, train)
    atom_weights = atom_weights_for_dataset(d.atom_weights_file, train) if d.atom_weights_file else None
    return TrainingData(
        structures=structures,
        train_indices=train_idx,
        val_indices=val_idx,
        train=train,
        val=val,
        model_config=model_config,
        sigma_dft=sigma_dft,
        atom_weights=atom_weights,
        dtype=dtype,
    )
