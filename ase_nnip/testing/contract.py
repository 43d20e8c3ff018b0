"""The physics every model type must obey, as a test class a model's own tests subclass.

Like NequIP's shared model tests: write, in a test module of the package that defines the
model type,

.. code-block:: python

    from ase_nnip.testing.contract import ModelContract

    class TestMyModel(ModelContract):
        config = {"model_type": "my_model", "species": ["H", "O"], "cutoff_A": 4.0, ...}

and pytest runs every check below on a small random model built from ``config``, in float64
and float32, through autograd of the model as trained and with frozen weights (the
calculator's path). Checked: invariance under rotations, inversion, translations and
permutations, and E(3)-equivariance of forces and stress; per-block equivariance of internal
features (for models that say which, :meth:`ModelContract.block_features`); forces equal
to minus the energy gradient (finite differences) and stress to ASE's numerical stress on a
sheared cell; a batch equal to its structures one by one; strict locality (each atom's
energy depends only on atoms within ``model.message_passing_steps`` neighbour-list hops, and
the partial forces sum to the forces); independent isolated atoms and per-atom reference
energies; an energy and forces that vanish smoothly at the cutoff; float32 following
float64. Needs pytest (a test dependency, not a run-time one).
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar, Optional

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_stress
from scipy.spatial.transform import Rotation

from ase_nnip.calculator import NNIPCalculator
from ase_nnip.data import atoms_to_graph, collate
from ase_nnip.derivatives import frozen_weights
from ase_nnip.models import build_model
from ase_nnip.models.base import model_dtype
from ase_nnip.properties import predict
from ase_nnip.testing.structures import hop_chain, numerical_forces, water_box

#: Absolute tolerance of an exact symmetry, per precision (eV, eV/Å).
SYMMETRY_ATOL = {torch.float64: 1e-9, torch.float32: 2e-4}
MODES = ("autograd", "frozen")


def neighbour_hops(edge_index: np.ndarray, n_atoms: int) -> np.ndarray:
    """(N, N) number of neighbour-list hops between atoms (-1: not connected); edge_index (2, E)."""
    adjacency = [set() for _ in range(n_atoms)]
    for i, j in edge_index.T:
        adjacency[int(i)].add(int(j))
    hops = np.full((n_atoms, n_atoms), -1)
    for start in range(n_atoms):
        hops[start, start] = 0
        queue = deque([start])
        while queue:
            a = queue.popleft()
            for b in adjacency[a]:
                if hops[start, b] < 0:
                    hops[start, b] = hops[start, a] + 1
                    queue.append(b)
    return hops


def wigner_matrix(l: int, rotation: np.ndarray) -> torch.Tensor:
    """D_l(R) (2l+1, 2l+1) in float64 with Y_l(R v) = D_l(R) Y_l(v) for e3nn's real spherical
    harmonics (component normalisation), solved from 4l + 8 random directions (exact to
    rounding, unlike e3nn's float32 ``D_from_matrix``)."""
    from e3nn import o3

    v = torch.tensor(np.random.default_rng(l).normal(size=(4 * l + 8, 3)))
    R = torch.tensor(rotation, dtype=torch.float64)
    y = o3.spherical_harmonics(l, v, normalize=True, normalization="component")
    y_rotated = o3.spherical_harmonics(l, v @ R.T, normalize=True, normalization="component")
    return torch.linalg.lstsq(y, y_rotated).solution.T


class ModelContract:
    """Subclass with ``config`` set to a small config of the model type under test."""

    #: A small config of the model type (its ``model_type`` must be registered); species must
    #: include H and O (the test structures are water).
    config: ClassVar[Optional[dict]] = None
    seed: ClassVar[int] = 0

    # --- hooks a subclass may override ------------------------------------------------
    def build(self, dtype=torch.float64, **changes):
        """The model under test: ``config`` with ``changes``, seeded random weights, eval mode."""
        torch.manual_seed(self.seed)
        return build_model({**self.config, **changes}).to(dtype).eval()

    def prepare_frozen(self, model) -> None:
        """Called before the frozen-weight checks (e.g. to choose which precisions use a table)."""

    def block_features(self, model, graph) -> list[tuple[str, torch.Tensor, list[int]]]:
        """Internal features that must rotate with the structure: [(name, (N, Σ(2l+1), C) tensor,
        orders l of its blocks in order)], in e3nn's real spherical-harmonic basis. Default: none."""
        return []

    # --- fixtures -----------------------------------------------------------------------
    @pytest.fixture(params=[(dtype, mode) for dtype in ("float64", "float32") for mode in MODES],
                    ids=lambda p: "-".join(p))
    def model(self, request):
        if self.config is None:
            pytest.skip("ModelContract itself has no config; subclass it")
        dtype_name, mode = request.param
        model = self.build(getattr(torch, dtype_name))
        if mode == "autograd":
            yield model
            return
        self.prepare_frozen(model)
        with frozen_weights():
            yield model

    # --- helpers ------------------------------------------------------------------------
    @staticmethod
    def evaluate(model, atoms, stress=False):
        """(energy eV, forces (N, 3) eV/Å, stress (3, 3) eV/Å³ or None, descriptors (N, d))."""
        graph = atoms_to_graph(atoms, model.cutoff).to(dtype=model_dtype(model))
        out = predict(model, graph, forces=True, stress=stress)
        s = None if out.stress is None else out.stress[0].detach().numpy()
        return float(out.energy[0].detach()), out.forces.detach().numpy(), s, out.descriptors.detach().numpy()

    @staticmethod
    def atol(model) -> float:
        return SYMMETRY_ATOL[model_dtype(model)]

    @staticmethod
    def cluster() -> Atoms:
        """Four water molecules without a cell."""
        return water_box(n=4, triclinic=False, pbc=False)

    @staticmethod
    def needs_float64(model):
        if model_dtype(model) != torch.float64:
            pytest.skip("finite differences need float64")

    # --- the contract -------------------------------------------------------------------
    def test_rotation_inversion_translation_permutation(self, model):
        atoms, atol = self.cluster(), self.atol(model)
        e0, f0, _, d0 = self.evaluate(model, atoms)
        rot = Rotation.random(random_state=7).as_matrix()
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + np.array([1.3, -2.0, 0.7])
        e1, f1, _, d1 = self.evaluate(model, moved)
        assert e1 == pytest.approx(e0, abs=atol)
        np.testing.assert_allclose(f1, f0 @ rot.T, atol=atol)  # forces rotate with the atoms
        np.testing.assert_allclose(d1, d0, atol=atol)  # descriptors are invariant
        inverted = atoms.copy()
        inverted.positions = -atoms.positions  # an improper rotation: E(3), not only SO(3)
        e3, f3, _, _ = self.evaluate(model, inverted)
        assert e3 == pytest.approx(e0, abs=atol)
        np.testing.assert_allclose(f3, -f0, atol=atol)
        order = np.random.default_rng(1).permutation(len(atoms))
        e2, f2, _, _ = self.evaluate(model, atoms[order])
        assert e2 == pytest.approx(e0, abs=atol)
        np.testing.assert_allclose(f2, f0[order], atol=atol)

    def test_periodic_rotation_wrapping_and_stress(self, model):
        atoms, atol = water_box(), self.atol(model)
        e0, f0, s0, _ = self.evaluate(model, atoms, stress=True)
        rot = Rotation.random(random_state=3).as_matrix()
        rotated = atoms.copy()
        rotated.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        rotated.positions = atoms.positions @ rot.T
        e1, f1, s1, _ = self.evaluate(model, rotated, stress=True)
        assert e1 == pytest.approx(e0, abs=atol)
        np.testing.assert_allclose(f1, f0 @ rot.T, atol=atol)
        np.testing.assert_allclose(s1, rot @ s0 @ rot.T, atol=atol / 10)
        wrapped = atoms.copy()
        wrapped.positions += 2.5
        wrapped.wrap()
        assert self.evaluate(model, wrapped)[0] == pytest.approx(e0, abs=atol)

    def test_every_block_is_equivariant(self, model):
        """Each internal feature block l rotates with its Wigner matrix D_l(R)."""
        atoms = self.cluster()
        dtype = model_dtype(model)
        graph = atoms_to_graph(atoms, model.cutoff).to(dtype=dtype)
        features = self.block_features(model, graph)
        if not features:
            pytest.skip(f"{type(model).__name__} declares no equivariant internal features")
        rot = Rotation.random(random_state=11).as_matrix()
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ rot.T
        turned = self.block_features(model, atoms_to_graph(rotated, model.cutoff).to(dtype=dtype))
        for (name, h, orders), (_, h_rot, _) in zip(features, turned):
            start = 0
            for l in orders:
                D = wigner_matrix(l, rot).to(dtype)
                block, block_rot = h[:, start:start + 2 * l + 1], h_rot[:, start:start + 2 * l + 1]
                expected = torch.einsum("ij,njc->nic", D, block)
                scale = max(1.0, float(block.abs().max()))
                assert torch.allclose(block_rot, expected, atol=self.atol(model) * scale), f"{name}, l = {l}"
                start += 2 * l + 1
            assert start == h.shape[1], f"{name}: orders {orders} do not cover {h.shape[1]} components"

    def test_forces_are_minus_the_energy_gradient(self, model):
        self.needs_float64(model)
        atoms = self.cluster()
        forces = self.evaluate(model, atoms)[1]
        numeric = numerical_forces(lambda a: self.evaluate(model, a)[0], atoms)
        np.testing.assert_allclose(forces, numeric, atol=1e-7, rtol=1e-6)
        assert np.abs(forces.sum(axis=0)).max() < 1e-10  # no net force on an isolated cluster

    def test_calculator_stress_matches_ase_numerical_stress_on_a_sheared_cell(self, model):
        self.needs_float64(model)
        atoms = water_box()
        atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.3, -0.2], [0.0, 0.0, 0.25], [0.15, 0.0, 0.0]]),
                       scale_atoms=True)
        atoms.calc = NNIPCalculator(model)
        stress = atoms.get_stress()  # Voigt: xx yy zz yz xz xy (eV/Å³)
        numeric = calculate_numerical_stress(atoms, eps=1e-5)
        assert np.abs(numeric[3:]).min() > 1e-6  # shear components differ from zero
        np.testing.assert_allclose(stress, numeric, rtol=1e-5, atol=1e-9)

    def test_a_batch_equals_the_structures_one_by_one(self, model):
        structures = [self.cluster(), water_box(), self.cluster()[:3]]
        dtype, atol = model_dtype(model), self.atol(model)
        graphs = [atoms_to_graph(a, model.cutoff).to(dtype=dtype) for a in structures]
        batched = predict(model, collate(graphs))
        start = 0
        for k, g in enumerate(graphs):
            single = predict(model, g)
            assert float(batched.energy[k].detach()) == pytest.approx(float(single.energy[0].detach()), abs=atol)
            np.testing.assert_allclose(batched.forces[start:start + g.num_atoms].detach(), single.forces.detach(),
                                       atol=atol)
            start += g.num_atoms

    def test_strict_locality_and_partial_forces(self, model):
        """∂E_i/∂r_j is exactly 0 when j is more than ``message_passing_steps`` hops from i,
        and −Σ_i ∂E_i/∂r_j is the force on j (NequIP's partial-forces test)."""
        steps = model.message_passing_steps
        atoms = hop_chain(model.cutoff, n_atoms=steps + 4)
        dtype = model_dtype(model)
        graph = atoms_to_graph(atoms, model.cutoff).to(dtype=dtype)
        hops = neighbour_hops(graph.edge_index.numpy(), len(atoms))
        assert hops[0, -1] == len(atoms) - 1  # the chain is what it claims
        positions = graph.positions.detach().requires_grad_(True)
        from dataclasses import replace

        energies = model(replace(graph, positions=positions)).energies
        partial = np.stack([torch.autograd.grad(energies[i], positions, retain_graph=True)[0].numpy()
                            for i in range(len(atoms))])  # (i, j, 3): ∂E_i/∂r_j
        magnitude = np.abs(partial).max(axis=2)
        beyond = hops > steps
        assert beyond.any()
        assert np.all(magnitude[beyond] == 0.0), f"E_i depends on atoms more than {steps} hops away"
        assert np.all(magnitude[(hops >= 1) & (hops <= steps)] > 0)  # and on those within reach
        forces = predict(model, graph).forces.detach().numpy()
        np.testing.assert_allclose(-partial.sum(axis=0), forces, atol=self.atol(model))

    def test_isolated_atoms_are_independent(self, model):
        atol = self.atol(model)

        def energy(atoms):
            e, f, _, _ = self.evaluate(model, atoms)
            assert np.all(f == 0)
            return e

        e_h, e_o = energy(Atoms("H", positions=[[0, 0, 0]])), energy(Atoms("O", positions=[[0, 0, 0]]))
        far = Atoms("HO", positions=[[0, 0, 0], [0, 0, model.cutoff + 2.0]])
        assert energy(far) == pytest.approx(e_h + e_o, abs=atol)
        # the reference energy is added per atom, nothing else changes
        reference = dict(self.config.get("reference_energies_eV") or {})
        shifted = self.build(model_dtype(model), reference_energies_eV={**reference, "H": reference.get("H", 0.0) + 3.6})
        assert self.evaluate(shifted, Atoms("H"))[0] == pytest.approx(e_h + 3.6, abs=atol)

    def test_energy_and_its_gradient_vanish_at_the_cutoff(self, model):
        """The pair term and its derivative go to zero at r_c (NequIP's cutoff-gradient test):
        continuous energy and force across the cutoff, and the force shrinks as r → r_c."""
        rc = model.cutoff

        def dimer(r):
            return self.evaluate(model, Atoms("HO", positions=[[0, 0, 0], [0, 0, r]]))

        e_out, f_out, _, _ = dimer(rc + 1e-3)
        assert np.all(f_out == 0)
        tolerance = 1e-6 if model_dtype(model) == torch.float64 else 1e-3
        near, nearer = np.abs(dimer(rc - 2e-2)[1]).max(), np.abs(dimer(rc - 1e-2)[1]).max()
        assert nearer < near  # the force falls towards the cutoff
        e_in, f_in, _, _ = dimer(rc * (1 - 1e-4))
        assert e_in == pytest.approx(e_out, abs=tolerance)
        assert np.abs(f_in).max() < tolerance
        assert abs(dimer(rc - 0.3)[0] - e_out) > 1e-5  # inside, the atoms do interact

    def test_float32_follows_float64(self, model):
        if model_dtype(model) != torch.float64:
            pytest.skip("compares float32 against this float64 model")
        atoms = self.cluster()
        e64, f64, _, _ = self.evaluate(model, atoms)
        e32, f32, _, _ = self.evaluate(self.build(torch.float32), atoms)
        assert e32 == pytest.approx(e64, abs=1e-3)
        np.testing.assert_allclose(f32, f64, atol=1e-4)


__all__ = ["ModelContract", "SYMMETRY_ATOL", "neighbour_hops", "wigner_matrix"]
