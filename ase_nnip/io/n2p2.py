"""Import of RuNNer/n2p2 second-generation neural network potentials.

A potential directory holds ``input.nn`` (settings, symmetry functions, architecture),
``scaling.data`` (per-function statistics) and ``weights.ZZZ.data`` (one network per
element, ZZZ its atomic number). The conventions followed (those of n2p2):

* elements are ordered by atomic number, whatever the order of the ``elements`` line;
* the functions of each element are in n2p2's sorted order (type, r_c, η, r_s, ζ, λ,
  neighbour elements; :func:`~ase_nnip.descriptors.sort_like_n2p2`), not in file order,
  and ``scaling.data`` lists them in that order; angular neighbour pairs are unordered;
* a weights file lists, layer by layer, all weights of the layer with the input neuron
  as the outer loop and the output neuron as the inner loop, then the layer's biases;
* the scaling type follows ``scale_symmetry_functions`` / ``center_symmetry_functions``
  / ``scale_symmetry_functions_sigma`` with ``scale_min_short`` / ``scale_max_short``
  (default 0 and 1);
* with data-set normalisation (``mean_energy``, ``conv_energy``, ``conv_length``) the
  network output y is an energy in normalised units: E_i = y / conv_energy + mean_energy
  (conv_length leaves the dimensionless symmetry functions unchanged);
* ``atom_energy <element> <E>`` offsets become the model's reference energies.

The files carry no units: ``length_unit_A`` and ``energy_unit_eV`` say what one file unit
is in Å and eV (``UNIT_SYSTEMS["bohr-hartree"]`` for the usual Bohr/Hartree potentials).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_z

from ase_nnip.descriptors.cutoff import N2P2_CUTOFF_CODES
from ase_nnip.descriptors.symmetry_functions import RADIAL, SymmetryFunction, sort_like_n2p2
from ase_nnip.errors import InputError

# CODATA 2018, the values n2p2's reference results for the water potential were converted with.
BOHR_A = 0.529177210903
HARTREE_EV = 27.211386245988
UNIT_SYSTEMS = {"angstrom-ev": (1.0, 1.0), "bohr-hartree": (BOHR_A, HARTREE_EV)}

ACTIVATION_CODES = {
    "l": "linear",
    "t": "tanh",
    "s": "sigmoid",
    "S": "revsigmoid",
    "p": "softplus",
    "r": "relu",
    "g": "gaussian",
    "c": "cos",
    "e": "exp",
    "h": "harmonic",
}
_SF_KEYWORDS = ("symfunction_short", "symfunction")


class N2P2Error(InputError):
    """An n2p2/RuNNer potential file is missing, malformed or uses an unsupported feature."""


@dataclass
class N2P2Settings:
    """What ``input.nn`` says about the short-range potential (values in file units).

    symmetry_functions holds (line number, function) in file order; activations has one
    entry per hidden layer plus the output layer.
    """

    elements: list[str]
    cutoff_type: int = 1
    cutoff_alpha: float = 0.0
    symmetry_functions: list[tuple[int, SymmetryFunction]] = field(default_factory=list)
    hidden_layers: list[int] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    scaling: str = "none"
    scale_min: float = 0.0
    scale_max: float = 1.0
    normalize_nodes: bool = False
    mean_energy: float = 0.0
    conv_energy: float = 1.0
    conv_length: float = 1.0
    atom_energies: dict[str, float] = field(default_factory=dict)

    def sorted_functions(self) -> dict[str, list[SymmetryFunction]]:
        """{element: functions in n2p2 order} for every element."""
        ordered = sort_like_n2p2([sf for _, sf in self.symmetry_functions], self.elements)
        return {e: [sf for sf in ordered if sf.element == e] for e in self.elements}


def _strip_comment(line: str) -> str:
    for mark in ("#", "!"):
        line = line.split(mark, 1)[0]
    return line.strip()


def _float(token: str, path, lineno: int, what: str) -> float:
    try:
        return float(token.replace("d", "e").replace("D", "E"))
    except ValueError as exc:
        raise N2P2Error(f"{path}:{lineno}: {what} must be a number, got {token!r}") from exc


def read_input_nn(path) -> N2P2Settings:
    """Parse the short-range-potential settings of an n2p2/RuNNer ``input.nn``."""
    path = Path(path)
    if not path.is_file():
        raise N2P2Error(f"n2p2 settings file not found: {path}")
    keywords: dict[str, tuple[int, list[str]]] = {}
    sf_lines: list[tuple[int, list[str]]] = []
    atom_energy_lines: list[tuple[int, list[str]]] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        tokens = _strip_comment(raw).split()
        if not tokens:
            continue
        key, values = tokens[0], tokens[1:]
        if key in _SF_KEYWORDS:
            sf_lines.append((lineno, values))
        elif key == "atom_energy":
            atom_energy_lines.append((lineno, values))
        else:
            keywords[key] = (lineno, values)

    def value(key, default=None):
        return keywords[key][1] if key in keywords else default

    for key, allowed in (("nnp_generation", "2"), ("nnp_type", "2")):
        if key in keywords and value(key)[:1] != [allowed]:
            raise N2P2Error(f"{path}:{keywords[key][0]}: {key} {' '.join(value(key))} is not supported "
                            "(only second-generation short-range potentials)")
    if "use_electrostatics" in keywords:
        raise N2P2Error(f"{path}:{keywords['use_electrostatics'][0]}: electrostatics is not supported")
    if "elements" not in keywords:
        raise N2P2Error(f"{path}: no 'elements' line")
    elements = value("elements")
    for e in elements:
        if e not in symbol_to_z:
            raise N2P2Error(f"{path}:{keywords['elements'][0]}: unknown element {e!r}")
    if "number_of_elements" in keywords and int(value("number_of_elements")[0]) != len(elements):
        raise N2P2Error(f"{path}: number_of_elements {value('number_of_elements')[0]} but {len(elements)} elements listed")
    settings = N2P2Settings(elements=sorted(set(elements), key=lambda s: symbol_to_z[s]))

    if "cutoff_type" in keywords:
        lineno, tokens = keywords["cutoff_type"]
        code = int(tokens[0])
        if code not in N2P2_CUTOFF_CODES:
            raise N2P2Error(f"{path}:{lineno}: unknown cutoff_type {code}; known: {N2P2_CUTOFF_CODES}")
        settings.cutoff_type = code
        if len(tokens) > 1:
            settings.cutoff_alpha = _float(tokens[1], path, lineno, "cutoff alpha")

    for key in ("global_hidden_layers_short", "global_nodes_short", "global_activation_short"):
        if key not in keywords:
            raise N2P2Error(f"{path}: no '{key}' line")
    n_hidden = int(value("global_hidden_layers_short")[0])
    settings.hidden_layers = [int(n) for n in value("global_nodes_short")[:n_hidden]]
    codes = value("global_activation_short")[: n_hidden + 1]
    if len(settings.hidden_layers) != n_hidden or len(codes) != n_hidden + 1:
        raise N2P2Error(f"{path}: {n_hidden} hidden layers need {n_hidden} node counts and {n_hidden + 1} activations, "
                        f"got {value('global_nodes_short')} and {value('global_activation_short')}")
    unknown = [c for c in codes if c not in ACTIVATION_CODES]
    if unknown:
        raise N2P2Error(f"{path}: unknown activation code(s) {unknown}; known: {ACTIVATION_CODES}")
    settings.activations = [ACTIVATION_CODES[c] for c in codes]
    for key in keywords:
        if key.startswith("element_") and key.endswith("_short"):
            raise N2P2Error(f"{path}:{keywords[key][0]}: element-specific architectures ({key}) are not supported")

    scale, center, sigma = (k in keywords for k in
                            ("scale_symmetry_functions", "center_symmetry_functions", "scale_symmetry_functions_sigma"))
    settings.scaling = ("scalesigma" if sigma else "scalecenter" if scale and center else "scale" if scale
                        else "center" if center else "none")
    if "scale_min_short" in keywords:
        settings.scale_min = _float(value("scale_min_short")[0], path, keywords["scale_min_short"][0], "scale_min_short")
    if "scale_max_short" in keywords:
        settings.scale_max = _float(value("scale_max_short")[0], path, keywords["scale_max_short"][0], "scale_max_short")
    settings.normalize_nodes = "normalize_nodes" in keywords
    for key in ("mean_energy", "conv_energy", "conv_length"):
        if key in keywords:
            setattr(settings, key, _float(value(key)[0], path, keywords[key][0], key))

    for lineno, tokens in atom_energy_lines:
        if len(tokens) < 2 or tokens[0] not in settings.elements:
            raise N2P2Error(f"{path}:{lineno}: atom_energy needs one of {settings.elements} and an energy, got {tokens}")
        settings.atom_energies[tokens[0]] = _float(tokens[1], path, lineno, "atom_energy")

    for lineno, tokens in sf_lines:
        settings.symmetry_functions.append((lineno, _parse_symmetry_function(tokens, settings.elements, path, lineno)))
    if not settings.symmetry_functions:
        raise N2P2Error(f"{path}: no symfunction_short lines")
    return settings


def _parse_symmetry_function(tokens: list[str], elements: list[str], path, lineno: int) -> SymmetryFunction:
    """``E 2 N eta rs rc`` or ``E 3|9 N1 N2 eta lambda zeta rc [rs]`` (file units)."""
    where = f"{path}:{lineno}"
    if len(tokens) < 2:
        raise N2P2Error(f"{where}: incomplete symmetry-function line {tokens}")
    try:
        sf_type = int(tokens[1])
    except ValueError as exc:
        raise N2P2Error(f"{where}: symmetry-function type must be an integer, got {tokens[1]!r}") from exc
    n_neighbors = {2: 1, 3: 2, 9: 2}.get(sf_type)
    if n_neighbors is None:
        raise N2P2Error(f"{where}: symmetry-function type {sf_type} is not supported (only 2, 3 and 9)")
    needed = 6 if sf_type == RADIAL else 8
    if len(tokens) < needed:
        raise N2P2Error(f"{where}: type {sf_type} needs {needed} fields, got {tokens}")
    for symbol in tokens[0:1] + tokens[2 : 2 + n_neighbors]:
        if symbol not in elements:
            raise N2P2Error(f"{where}: element {symbol!r} is not among the potential's elements {elements}")
    numbers = [_float(t, path, lineno, "symmetry-function parameter") for t in tokens[2 + n_neighbors : needed]]
    if sf_type == RADIAL:
        eta, rs, rc = numbers
        sf = SymmetryFunction(tokens[0], sf_type, (tokens[2],), eta, rc, rs)
    else:
        eta, lam, zeta, rc = numbers
        rs = _float(tokens[8], path, lineno, "r_s") if len(tokens) > 8 else 0.0
        sf = SymmetryFunction(tokens[0], sf_type, (tokens[2], tokens[3]), eta, rc, rs, lam, zeta)
    try:
        return sf.validated(where)
    except ValueError as exc:
        raise N2P2Error(str(exc)) from exc


def read_scaling_data(path, counts: dict[str, int], elements: list[str]) -> dict[str, dict[str, list[float]]]:
    """Per-element statistics from ``scaling.data``: {symbol: {"min", "max", "mean"[, "sigma"]}}.

    Lines are ``element_index function_index min max mean [sigma]`` (1-based indices,
    elements by atomic number); other lines (comments, RuNNer's energy range line) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise N2P2Error(f"n2p2 scaling file not found: {path}")
    columns = {e: {} for e in elements}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        tokens = _strip_comment(raw).split()
        if len(tokens) < 5:
            continue
        try:
            e, k = int(tokens[0]), int(tokens[1])
        except ValueError:
            continue
        if not 1 <= e <= len(elements) or not 1 <= k <= counts[elements[e - 1]]:
            raise N2P2Error(f"{path}:{lineno}: element {e} / function {k} out of range "
                            f"({len(elements)} elements, functions per element {counts})")
        row = [_float(t, path, lineno, "scaling value") for t in tokens[2:6]]
        columns[elements[e - 1]][k] = row
    out = {}
    for symbol in elements:
        rows = columns[symbol]
        missing = [k for k in range(1, counts[symbol] + 1) if k not in rows]
        if missing:
            raise N2P2Error(f"{path}: no scaling line for element {symbol} function(s) {missing[:10]}")
        table = [rows[k] for k in range(1, counts[symbol] + 1)]
        out[symbol] = {"min": [r[0] for r in table], "max": [r[1] for r in table], "mean": [r[2] for r in table]}
        if all(len(r) > 3 for r in table):
            out[symbol]["sigma"] = [r[3] for r in table]
    return out


def read_weights(path) -> np.ndarray:
    """All connection values of one element network, in file order (first column of each line)."""
    path = Path(path)
    if not path.is_file():
        raise N2P2Error(f"n2p2 weights file not found: {path}")
    values = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        tokens = _strip_comment(raw).split()
        if tokens:
            values.append(_float(tokens[0], path, lineno, "weight"))
    return np.array(values, dtype=np.float64)


def split_weights(values: np.ndarray, sizes: list[int], path="weights") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer (W (n_out, n_in) as in torch.nn.Linear, b (n_out,)) from n2p2's flat order:
    layer by layer, weights with the input neuron as the outer loop, then biases."""
    expected = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    if values.size != expected:
        raise N2P2Error(f"{path}: {values.size} values, but the architecture {sizes} has {expected} weights and biases")
    layers, at = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w = values[at : at + n_in * n_out].reshape(n_in, n_out).T
        at += n_in * n_out
        b = values[at : at + n_out]
        at += n_out
        layers.append((w, b))
    return layers


def n2p2_config(settings: N2P2Settings, statistics: dict, length_unit_A: float = 1.0, energy_unit_eV: float = 1.0) -> dict:
    """Model config (Å, eV) of a Behler–Parrinello model equivalent to the potential."""
    functions = settings.sorted_functions()
    converted = []
    for symbol in settings.elements:
        for sf in functions[symbol]:
            converted.append(
                SymmetryFunction(
                    sf.element, sf.type, sf.neighbors, sf.eta_per_A2 / length_unit_A**2, sf.rc_A * length_unit_A,
                    sf.rs_A * length_unit_A, sf.lambda_, sf.zeta,
                ).to_dict()
            )
    return {
        "model_type": "behler_parrinello",
        "species": list(settings.elements),
        "cutoff_A": max(sf["rc_A"] for sf in converted),
        "reference_energies_eV": {s: e * energy_unit_eV for s, e in settings.atom_energies.items()},
        "symmetry_functions": converted,
        "cutoff_function": N2P2_CUTOFF_CODES[settings.cutoff_type],
        "cutoff_alpha": settings.cutoff_alpha,
        "scaling": settings.scaling,
        "scaling_min": settings.scale_min,
        "scaling_max": settings.scale_max,
        "sf_statistics": statistics if settings.scaling != "none" else {},
        "hidden_layers": list(settings.hidden_layers),
        "activations": list(settings.activations[:-1]),
        "output_activation": settings.activations[-1],
        "normalize_nodes": settings.normalize_nodes,
        "energy_scale_eV": energy_unit_eV / settings.conv_energy,
        "energy_shift_eV": settings.mean_energy * energy_unit_eV,
    }


def import_n2p2(
    directory,
    units: Union[str, tuple[float, float]] = "angstrom-ev",
    dtype: torch.dtype = torch.float64,
    weights_pattern: str = "weights.{:03d}.data",
):
    """Load an n2p2/RuNNer potential directory as a :class:`BehlerParrinelloModel` (Å, eV).

    Args:
        directory: folder with input.nn, scaling.data and the weights files.
        units: "angstrom-ev", "bohr-hartree", or (Å per file length unit, eV per file energy unit).
        dtype: dtype of the network weights (float64 keeps the file's precision).
        weights_pattern: file name of each element's weights, formatted with its atomic number.
    """
    from ase_nnip.models import build_model

    directory = Path(directory)
    if isinstance(units, str):
        if units not in UNIT_SYSTEMS:
            raise N2P2Error(f"unknown unit system {units!r}; choose from {sorted(UNIT_SYSTEMS)} or give (Å, eV) factors")
        length_unit_A, energy_unit_eV = UNIT_SYSTEMS[units]
    else:
        length_unit_A, energy_unit_eV = (float(u) for u in units)
    settings = read_input_nn(directory / "input.nn")
    functions = settings.sorted_functions()
    counts = {e: len(functions[e]) for e in settings.elements}
    statistics: dict = {}
    if settings.scaling != "none":
        statistics = read_scaling_data(directory / "scaling.data", counts, settings.elements)
    config = n2p2_config(settings, statistics, length_unit_A, energy_unit_eV)
    model = build_model(config).to(dtype)
    with torch.no_grad():
        for symbol in settings.elements:
            path = directory / weights_pattern.format(symbol_to_z[symbol])
            sizes = [counts[symbol], *settings.hidden_layers, 1]
            for layer, (w, b) in zip(model.networks[symbol].layers, split_weights(read_weights(path), sizes, path)):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                layer.bias.copy_(torch.from_numpy(b))
    model.metadata = {
        "source": "n2p2",
        "directory": str(directory.resolve()),
        "length_unit_A": length_unit_A,
        "energy_unit_eV": energy_unit_eV,
    }
    return model.eval()


def potential_summary(model) -> dict:
    """Species, function counts and architecture of an imported model (for the CLI)."""
    layer = model.symmetry_functions
    return {
        "species": model.species,
        "cutoff_A": model.cutoff,
        "functions_per_element": dict(zip(model.species, layer.num_functions)),
        "hidden_layers": model.config["hidden_layers"],
        "activations": model.config["activations"] + [model.config["output_activation"]],
        "scaling": model.config["scaling"],
    }


__all__ = [
    "ACTIVATION_CODES",
    "BOHR_A",
    "HARTREE_EV",
    "N2P2Error",
    "N2P2Settings",
    "UNIT_SYSTEMS",
    "import_n2p2",
    "n2p2_config",
    "potential_summary",
    "read_input_nn",
    "read_scaling_data",
    "read_weights",
    "split_weights",
]
