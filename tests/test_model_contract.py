"""The model contract (ase_nnip.testing.contract) on every model type: the two built-in ones
and a plugin type registered here, the way a package outside ase_nnip would add its own."""

from dataclasses import dataclass, replace

import pytest
import torch
from structures import TINY_MODEL_CONFIGS

from ase_nnip.core.errors import ConfigError
from ase_nnip.models import build_model, model_types, register_model_type
from ase_nnip.models.base import AtomisticModel, CommonConfig
from ase_nnip.models.equivariant_ops import edge_layout
from ase_nnip.testing.contract import ModelContract


class TestEquivariantContract(ModelContract):
    config = TINY_MODEL_CONFIGS["equivariant"]

    def prepare_frozen(self, model):
        # the radial table in float64 too, so that the float64 tolerances test it
        model.table_dtypes = (torch.float32, torch.float64)

    def block_features(self, model, graph):
        """Every interaction block's output (N, (l_out+1)², C), through the exact torch path."""
        order, edges = edge_layout(graph.edge_index, graph.num_atoms)
        if order is not None:
            graph = replace(graph, edge_index=graph.edge_index[:, order], shifts=graph.shifts[order])
        outputs = []
        hooks = [block.register_forward_hook(lambda module, args, out, k=k: outputs.append((f"block {k}", out, k)))
                 for k, block in enumerate(model.blocks)]
        try:
            with torch.no_grad():
                model.exact_atomic_outputs(graph.edge_vectors(), model.species_index(graph.atomic_numbers), edges)
        finally:
            for hook in hooks:
                hook.remove()
        return [(name, out, list(range(model.blocks[k].l_out + 1))) for name, out, k in outputs]


class TestBehlerParrinelloContract(ModelContract):
    config = TINY_MODEL_CONFIGS["behler_parrinello"]


# --- a plugin model type, registered as a package outside ase_nnip would ------------------

@dataclass
class PairConfig(CommonConfig):
    """A smooth pair potential: E_i = ½ Σ_j a (1 − r/r_c)³ exp(−b r)."""

    strength_eV: float = 1.0
    decay_per_A: float = 0.8


@register_model_type
class SmoothPairModel(AtomisticModel):
    model_type = "test_smooth_pair"
    config_class = PairConfig

    def __init__(self, config):
        super().__init__(config)
        self.strength = torch.nn.Parameter(torch.tensor(self.options.strength_eV))
        self.decay = torch.nn.Parameter(torch.tensor(self.options.decay_per_A))

    @property
    def descriptor_dim(self):
        return 1

    def atomic_outputs(self, graph, species):
        r = torch.linalg.norm(graph.edge_vectors(), dim=-1)
        pair = self.strength * (1 - r / self.cutoff) ** 3 * torch.exp(-self.decay * r)
        energies = torch.zeros(graph.num_atoms, dtype=r.dtype).index_add(0, graph.edge_index[0], 0.5 * pair)
        return energies, energies.unsqueeze(-1)


class TestPluginContract(ModelContract):
    config = {"model_type": "test_smooth_pair", "species": ["H", "O"], "cutoff_A": 3.5,
              "reference_energies_eV": {"H": -13.6}}


def test_every_registered_model_type_has_a_contract_here():
    covered = {cls.config["model_type"] for cls in (TestEquivariantContract, TestBehlerParrinelloContract,
                                                      TestPluginContract)}
    assert covered == set(model_types())


def test_a_registered_type_builds_from_its_config_and_duplicates_are_refused():
    model = build_model(TestPluginContract.config)
    assert isinstance(model, SmoothPairModel) and model.config["model_type"] == "test_smooth_pair"

    class Impostor(SmoothPairModel):
        pass

    with pytest.raises(ConfigError, match="already registered"):
        register_model_type(Impostor)
    with pytest.raises(ConfigError, match="not an AtomisticModel"):
        register_model_type(dict)
