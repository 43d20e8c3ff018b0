"""Write a BPNN training config for the sampled water set, with the symmetry functions of
the imported n2p2 potential (the set of the Adam-versus-EKF study: 27 for H, 30 for O).

    python make_training_config.py water.nnip water_train.extxyz -o train_bpnn_adam.yaml

The model part follows the study (two hidden layers of 25 tanh nodes, linear output,
n2p2-style min/max scaling with centring, statistics from the training data); the training
part is a plain Adam baseline to edit (optimizer, epochs, batch size).
"""

import argparse
from pathlib import Path

import yaml

from ase_nnip.io.model_file import read_model_file


def training_config(model_file: str, data_file: str) -> dict:
    config, _, _ = read_model_file(model_file)
    return {
        "data": {"train_file": data_file, "energy_key": "energy", "forces_key": "forces", "n_val": 48, "split_seed": 0},
        "model": {
            "model_type": "behler_parrinello",
            "cutoff_A": config["cutoff_A"],
            "symmetry_functions": config["symmetry_functions"],
            "cutoff_function": config["cutoff_function"],
            "scaling": "scalecenter",
            "sf_statistics": "auto",
            "hidden_layers": [25, 25],
            "activations": "tanh",
            "energy_scale_eV": "auto",
            "energy_shift_eV": "auto",
        },
        "training": {
            "epochs": 100,
            "batch_size": 4,
            "energy_weight": 1.0,
            "forces_weight": 10.0,
            "optimizer": {"name": "adam", "lr": 1.0e-3},
            "scheduler": {"name": "exponential", "gamma": 0.98},
            "dtype": "float32",
            "num_threads": 2,
        },
        "output": {"directory": "runs/bpnn_adam"},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="imported n2p2 model (.nnip) whose symmetry functions to use")
    parser.add_argument("data", help="training data (extxyz from `ase-nnip sample`), relative to the output file")
    parser.add_argument("-o", "--output", default="train_bpnn_adam.yaml")
    args = parser.parse_args()
    text = yaml.safe_dump(training_config(args.model, args.data), sort_keys=False, width=120, default_flow_style=None)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
