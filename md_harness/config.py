"""Run configuration: presets, user YAML, overrides → one validated :class:`HarnessConfig`.

A config file is YAML; ``preset: NAME`` loads ``md_harness/presets/NAME.yaml`` first and the
file's other keys override it, then ``--set key=value`` overrides from the command line.
Every key is a field of :class:`HarnessConfig`; unknown keys are an error that lists the
valid ones. Keys carry their unit in their name (``_K``, ``_fs``, ``_ps``, ``_A``, …).

Paths: ``structure``, ``model`` (when it is a file) and ``uncertainty`` are relative to the
config file's folder; ``output`` is relative to the current directory.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from ase_nnip.core.configuration import load_yaml
from ase_nnip.core.errors import ConfigError
from ase_nnip.core.threads import validate_thread_setting

PRESET_DIR = Path(__file__).resolve().parent / "presets"
#: Ensembles with a thermostat time constant.
TAU_ENSEMBLES = ("nvt_berendsen", "npt_berendsen", "nvt_bussi", "nvt_nose_hoover", "npt_mtk")
from md_harness.ensembles import CONSERVING, ENSEMBLES, NPT
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_REQUIRED = object()


#: The sections of a config, in the order ``--help`` lists them.
SECTIONS = ("run", "protocol", "detectors", "report")
#: What a key may do when a results file is resumed: differ (it steers the run, not its
#: physics), name a file whose content must be the same (model identity, structure hash), or
#: be the same value.
ON_RESUME = ("may change", "same content", "must match")


def _key(default, help: str, types: tuple, *, section: str, nullable: bool = False, choices: tuple = (),
         on_resume: str = "must match", physics: bool = False):
    """A config key: its default, help line, accepted types and its metadata. ``physics``: a
    key of the protocol's physics, so that a run changing its preset's value is named after
    both (e.g. "3bpa-nvt-1600K[temperature_K=4200]") unless it names its protocol itself."""
    assert section in SECTIONS and on_resume in ON_RESUME
    metadata = {"help": help, "types": types, "nullable": nullable, "choices": choices, "required": default is _REQUIRED,
                "section": section, "on_resume": on_resume, "physics": physics}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=None if default is _REQUIRED else default, metadata=metadata)


NUM = (int, float)


@dataclasses.dataclass(frozen=True)
class HarnessConfig:
    """All settings of one stability campaign (one model × one protocol × n replicas)."""

    # run: what is run, where results go, how the run is steered (most may change on resume)
    description: str = _key("", "free text stored with the results", (str,), section="run", on_resume="may change")
    label: Optional[str] = _key(None, "name of the model in reports and plots (default: the results file's stem)", (str,), nullable=True, section="run", on_resume="may change")
    model: str = _key(
        _REQUIRED,
        "model file (ase_nnip .nnip: data, runs no code) or 'module:factory' returning any ASE calculator "
        "(imports that module and calls the factory on every rank: a config naming a factory is a program)",
        (str,),
        section="run", on_resume="same content",
    )
    model_kwargs: dict = _key({}, "keyword arguments for NNIPCalculator or for the factory", (dict,), section="run")
    uncertainty: Optional[str] = _key(None, "uncertainty estimator file (.ltau) attached to an .nnip model", (str,), nullable=True, section="run", on_resume="same content")
    model_cutoff_A: Optional[float] = _key(
        None, "model cutoff for the box-size check (default: cutoff_A of an .nnip model)", NUM, nullable=True,
        section="run",
    )
    threads_per_rank: Any = _key(
        "auto",
        "torch threads per rank: 'auto' (1 for systems under 100 atoms, else the node's cores shared among its "
        "ranks; never more than cores/ranks), a number, or null (torch's own default, which ignores other ranks)",
        (int, str),
        nullable=True,
        section="run", on_resume="may change",
    )
    output: Optional[str] = _key(None, "results file (HDF5); default: <config file stem>.h5 in the current directory", (str,), nullable=True, section="run", on_resume="may change")
    thermo_stride_steps: int = _key(10, "log a thermo row every this many steps (and at failure)", (int,), section="run")
    checkpoint_every_steps: int = _key(500, "send a restart checkpoint every this many steps", (int,), section="run", on_resume="may change")
    last_frames: int = _key(20, "positions of this many last steps are kept (written when a replica ends)", (int,), section="run")
    progress_interval_s: float = _key(60.0, "seconds between progress log lines when not on a terminal", NUM, section="run", on_resume="may change")
    wall_time_limit_s: Optional[float] = _key(
        None, "stop after this wall time; running replicas are checkpointed as unfinished", NUM, nullable=True,
        section="run", on_resume="may change",
    )
    # protocol: the MD every replica runs
    preset: Optional[str] = _key(None, "preset whose values are the defaults of every other key (md-harness presets)", (str,), nullable=True, section="protocol")
    protocol: str = _key(_REQUIRED, "protocol name; enters the replica seeds and reports (default: the preset name)", (str,), section="protocol")
    structure: str = _key(_REQUIRED, "start structure, any file ase.io.read understands", (str,), section="protocol", on_resume="same content")
    structure_index: int = _key(0, "frame of the structure file to start from", (int,), section="protocol")
    ensemble: str = _key(
        _REQUIRED,
        "integrator (md_harness/ensembles.py): nvt_berendsen, npt_berendsen (the papers'; Berendsen samples no "
        "ensemble), nve, nvt_langevin, nvt_bussi, nvt_nose_hoover, npt_mtk (isotropic MTK with Nose-Hoover chains)",
        (str,), choices=ENSEMBLES, section="protocol", physics=True)
    temperature_K: float = _key(_REQUIRED, "thermostat target temperature", NUM, section="protocol", physics=True)
    initial_temperature_K: Optional[float] = _key(
        None, "Maxwell-Boltzmann temperature of the initial velocities (default: temperature_K)", NUM, nullable=True,
        section="protocol", physics=True,
    )
    timestep_fs: float = _key(_REQUIRED, "MD time step", NUM, section="protocol", physics=True)
    thermostat_tau_fs: Optional[float] = _key(
        None, "thermostat time constant (Berendsen, Bussi, Nose-Hoover chain, MTK); not used by nve and nvt_langevin",
        NUM, nullable=True, section="protocol", physics=True)
    friction_per_fs: float = _key(0.01, "Langevin friction (nvt_langevin)", NUM, section="protocol", physics=True)
    nose_hoover_chain_length: int = _key(3, "thermostat (and MTK barostat) chain length (nvt_nose_hoover, npt_mtk)",
                                         (int,), section="protocol", physics=True)
    final_temperature_K: Optional[float] = _key(
        None, "ramp: the thermostat target goes linearly from temperature_K at t = 0 to this at duration_ps "
        "(null: constant)", NUM, nullable=True, section="protocol", physics=True)
    final_pressure_bar: Optional[float] = _key(
        None, "ramp: the barostat target goes linearly from pressure_bar to this (npt only; null: constant)", NUM,
        nullable=True, section="protocol", physics=True)
    pressure_bar: Optional[float] = _key(None, "barostat target pressure (npt only)", NUM, nullable=True, section="protocol", physics=True)
    barostat_tau_fs: Optional[float] = _key(None, "barostat time constant (npt only)", NUM, nullable=True, section="protocol", physics=True)
    compressibility_per_bar: Optional[float] = _key(None, "compressibility used by the barostat (npt_berendsen only)", NUM, nullable=True, section="protocol", physics=True)
    duration_ps: float = _key(_REQUIRED, "length of each replica; a replica reaching it has survived", NUM, section="protocol")
    n_replicas: int = _key(_REQUIRED, "number of independent replicas", (int,), section="protocol", on_resume="may change")
    seed: int = _key(0, "base seed; replica seeds derive from (seed, model, protocol, replica index)", (int,), section="protocol")
    # detectors: when a replica has failed, and launch checks of the start structure
    bond_margin_A: float = _key(0.3, "bonded if distance < sum of ASE covalent radii + this margin (first frame)", NUM, section="detectors", physics=True)
    bond_rupture_A: float = _key(2.0, "failure when any bonded distance exceeds this", NUM, section="detectors", physics=True)
    bond_pairs: Optional[list] = _key(
        None, "element pairs whose bonds are monitored, e.g. [[O, H]] (null: all bonds)", (list,), nullable=True,
        section="detectors", physics=True,
    )
    expected_bonds: Optional[int] = _key(None, "launch check: number of monitored bonds in the start structure", (int,), nullable=True, section="detectors")
    expected_bond_counts: Optional[dict] = _key(
        None, "launch check: monitored bonds per atom of an element, e.g. {O: 2, H: 1}", (dict,), nullable=True,
        section="detectors",
    )
    temperature_blowup_factor: float = _key(10.0, "failure when the temperature exceeds this times the thermostat target (of a ramp: at that step)", NUM, section="detectors", physics=True)
    max_energy_drift_eV_per_atom: Optional[float] = _key(
        None, "failure (energy_drift) when the conserved energy per atom (nve, nvt_nose_hoover, npt_mtk) moves this far "
        "from its value after the first fifth of the run (LAMBench's warm-up); null: only reported", NUM,
        nullable=True, section="detectors", physics=True)
    uncertainty_stop_eV_A: Optional[float] = _key(
        None, "uncertainty threshold: fires when the largest predicted per-atom force error (force_error) exceeds this "
        "for uncertainty_stop_rows thermo rows in a row; its first firing is recorded (null: off)", NUM,
        nullable=True, section="detectors")
    uncertainty_stop_rows: int = _key(1, "consecutive thermo rows above uncertainty_stop_eV_A that fire it", (int,),
                                      section="detectors")
    uncertainty_stop_ends_run: bool = _key(
        False, "true: a replica whose uncertainty threshold fires ends as 'stopped' (not a model failure); "
        "false: it runs on, so the report can say how far ahead of a failure the threshold fired", (bool,),
        section="detectors", physics=True)
    rdf_pair: Optional[str] = _key(
        None, "RDF window error (liquids, MDsim's detector): the element pair, e.g. 'O-O' (null: off); "
        "needs a fully periodic structure", (str,), nullable=True, section="detectors", physics=True)
    rdf_r_max_A: float = _key(6.0, "RDF range (at most half the smallest cell height)", NUM, section="detectors", physics=True)
    rdf_bins: int = _key(120, "RDF shells between 0 and rdf_r_max_A", (int,), section="detectors", physics=True)
    rdf_window_ps: float = _key(1.0, "RDF averaged over consecutive windows this long", NUM, section="detectors", physics=True)
    rdf_stride_steps: int = _key(10, "RDF sampled every this many steps", (int,), section="detectors", physics=True)
    rdf_reference: Optional[str] = _key(
        None, "reference g(r): a file of r_A, g columns (md-harness rdf writes one from any trajectory; "
        "null: each replica's first window)", (str,), nullable=True, section="detectors", on_resume="same content")
    rdf_max_error_A: Optional[float] = _key(
        None, "failure (rdf_error) when a window's ∫|g − g_ref| dr exceeds this (Å); null: only measured "
        "(the largest window error is recorded per replica)", NUM, nullable=True, section="detectors", physics=True)
    reference_density_g_cm3: Optional[float] = _key(None, "centre of the density band (npt only)", NUM, nullable=True, section="detectors", physics=True)
    density_band_fraction: float = _key(0.25, "failure when the running-mean density leaves reference × (1 ± this)", NUM, section="detectors", physics=True)
    density_bounds_g_cm3: list = _key([0.3, 2.0], "failure when the instantaneous density leaves [low, high]", (list,), section="detectors", physics=True)
    density_window_ps: float = _key(1.0, "window of the running-mean density", NUM, section="detectors", physics=True)
    box_min_cutoffs: float = _key(2.0, "failure when a cell height falls below this many model cutoffs (npt only)", NUM, section="detectors", physics=True)
    max_initial_force_eV_A: float = _key(50.0, "launch check: largest force allowed on the start structure", NUM, section="detectors")
    # report: early-warning and density analysis (computed when reporting)
    warning_false_alarm_rate: float = _key(
        0.1, "report: warning threshold = the level that this fraction of surviving replicas ever exceeds", NUM,
        section="report", on_resume="may change",
    )
    warning_horizon_ps: float = _key(0.1, "report: a thermo row 'fails within the next Δt' for this Δt (per-step AUROC)", NUM, section="report", on_resume="may change")
    warning_min_lead_ps: float = _key(
        0.1, "report: a failure counts as warned only if the signal crossed its threshold at least this long before", NUM, section="report", on_resume="may change")
    density_average_last_ps: float = _key(50.0, "density is averaged over this last part of a surviving replica", NUM, section="report")
    density_blocks: int = _key(
        5, "not used since the density error comes from automatic blocking (Flyvbjerg-Petersen, Lee et al.) and "
        "the replica spread; kept so that older configs and results files still load", (int,), section="report")

    @property
    def is_npt(self) -> bool:
        return self.ensemble in NPT

    @property
    def n_steps(self) -> int:
        """MD steps per replica (duration / time step)."""
        return int(round(self.duration_ps * 1000.0 / self.timestep_fs))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict:
        """{key: value} of one section (:data:`SECTIONS`)."""
        return {k: getattr(self, k) for k in keys_where(section=name)}



def config_keys() -> dict[str, dict]:
    """{key: metadata (help, types, nullable, choices, required, default)} in declaration order."""
    return {
        f.name: dict(f.metadata, default=f.default_factory() if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(HarnessConfig)
    }


def keys_where(**wanted) -> tuple[str, ...]:
    """The keys whose metadata has every ``wanted`` value, e.g. ``keys_where(section="report")``."""
    return tuple(k for k, m in config_keys().items() if all(m[name] == value for name, value in wanted.items()))


def describe_keys() -> str:
    """One line per key (name, default, help), under its section, for ``--help`` and docs."""
    lines = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for name in keys_where(section=section):
            meta = config_keys()[name]
            default = "required" if meta["required"] else f"default {meta['default']!r}"
            resume = "; may change on resume" if meta["on_resume"] == "may change" else ""
            lines.append(f"{name} ({default}{resume}): {meta['help']}")
    return "\n".join(lines)


#: Keys that may change when a results file is resumed: they steer the run, not its physics.
RUN_CONTROL_KEYS = frozenset(keys_where(on_resume="may change"))
#: Keys that name files: on resume their *content* must match (model identity, structure hash).
PATH_KEYS = keys_where(on_resume="same content")
#: Keys of the physics of a protocol (see ``physics`` in :func:`_key`).
PHYSICS_KEYS = keys_where(physics=True)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available presets: {list_presets()}")
    values = _read_yaml(path)
    values.setdefault("protocol", name)
    return values


def _read_yaml(path: Path) -> dict:
    try:
        values = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(values).__name__}")
    return values


def _check_known(values: dict, source: str) -> None:
    """Unknown keys are an error naming where they came from, with the closest valid key."""
    import difflib

    keys = config_keys()
    unknown = sorted(set(values) - set(keys))
    if unknown:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, keys, n=1)) else repr(k)
                 for k in unknown]
        raise ConfigError(f"{source}: unknown key(s) {', '.join(hints)}; valid keys are: {', '.join(keys)}")


def load_config(path=None, overrides: Optional[dict] = None) -> HarnessConfig:
    """Config file ⊕ overrides (and the preset either names), validated, paths resolved."""
    values = _read_yaml(Path(path)) if path is not None else {}
    _check_known(overrides or {}, "--set/--output")  # a typo on the command line is not the file's
    values.update(overrides or {})
    if values.get("output") is None and path is not None:
        values["output"] = f"{Path(path).stem}.h5"
    base_dir = Path(path).resolve().parent if path is not None else Path.cwd()
    return build_config(values, base_dir=base_dir, source=str(path) if path is not None else "overrides")


def build_config(values: dict, *, base_dir: Path = Path("."), source: str = "config") -> HarnessConfig:
    """Preset (``preset`` key) ⊕ ``values``: validate types, choices, required keys and
    consistency, and resolve input paths against ``base_dir``."""
    values = dict(values)
    if values.get("preset") is not None:
        preset = load_preset(values["preset"])
        explicit_name = values.get("protocol") is not None
        values = {**preset, **values}
        changed = {k: values[k] for k in PHYSICS_KEYS if k in values and values[k] != preset.get(k)}
        if changed and not explicit_name:
            # Another physics is another protocol: its name (and so the replica seeds) says so.
            values["protocol"] = f"{preset['protocol']}[{', '.join(f'{k}={v}' for k, v in sorted(changed.items()))}]"
    keys = config_keys()
    _check_known(values, source)
    missing = [k for k, m in keys.items() if m["required"] and values.get(k) is None]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {missing} (set them in the file, a preset or with --set)")
    for name, value in values.items():
        _check_type(name, value, keys[name], source)
    for name in PATH_KEYS:
        if values.get(name) is not None:
            values[name] = _resolve_path(name, values[name], base_dir)
    if values.get("output") is not None:
        values["output"] = str(Path(values["output"]).expanduser().resolve())
    values = {k: float(v) if (keys[k]["types"] == NUM and v is not None) else v for k, v in values.items()}
    config = HarnessConfig(**values)
    _check_consistency(config, source)
    return config


def _check_type(name, value, meta, source):
    if value is None:
        if meta["nullable"] or meta["required"]:
            return
        raise ConfigError(f"{source}: key {name!r} must not be null")
    types = meta["types"]
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{source}: key {name!r} must be {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{source}: key {name!r} must be {_type_names(types)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: key {name!r} must be a finite number, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{source}: key {name!r} must be one of {list(meta['choices'])}, got {value!r}")


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in types)


def _resolve_path(name: str, value: str, base_dir: Path) -> str:
    candidate = (base_dir / Path(value).expanduser()).resolve()
    if candidate.is_dir():
        what = "a model file (.nnip) or 'module:factory'" if name == "model" else f"a {name} file"
        raise ConfigError(f"key {name!r}: {candidate} is a directory, not {what}")
    if candidate.exists():
        return str(candidate)
    if name == "model" and FACTORY_PATTERN.match(value):
        return value
    what = "model file (or 'module:factory')" if name == "model" else f"{name} file"
    raise ConfigError(f"key {name!r}: {what} not found: {candidate}")


def _positive(config, source, *names):
    for name in names:
        value = getattr(config, name)
        if value is None or not value > 0:
            raise ConfigError(f"{source}: key {name!r} must be > 0, got {value!r}")


def _check_consistency(config: HarnessConfig, source: str) -> None:
    _positive(config, source, "temperature_K", "timestep_fs", "duration_ps", "n_replicas")
    if config.ensemble in TAU_ENSEMBLES:
        _positive(config, source, "thermostat_tau_fs")
    if config.ensemble == "nvt_langevin":
        _positive(config, source, "friction_per_fs")
    if config.ensemble in ("nvt_nose_hoover", "npt_mtk"):
        _positive(config, source, "nose_hoover_chain_length")
    if config.final_temperature_K is not None:
        if config.ensemble == "nve":
            raise ConfigError(f"{source}: a temperature ramp (final_temperature_K) needs a thermostat, not nve")
        _positive(config, source, "final_temperature_K")
    if config.final_pressure_bar is not None and not config.is_npt:
        raise ConfigError(f"{source}: a pressure ramp (final_pressure_bar) needs an npt ensemble, not {config.ensemble}")
    if config.max_energy_drift_eV_per_atom is not None:
        if config.ensemble not in CONSERVING:
            raise ConfigError(f"{source}: max_energy_drift_eV_per_atom needs an ensemble with a conserved energy "
                              f"({', '.join(CONSERVING)}), not {config.ensemble}")
        _positive(config, source, "max_energy_drift_eV_per_atom")
        if config.final_temperature_K is not None or config.final_pressure_bar is not None:
            raise ConfigError(f"{source}: max_energy_drift_eV_per_atom cannot be used with a ramp (a ramp changes "
                              "the conserved energy itself)")
    if config.uncertainty_stop_eV_A is not None:
        _positive(config, source, "uncertainty_stop_eV_A", "uncertainty_stop_rows")
    if config.rdf_pair is not None:
        _positive(config, source, "rdf_r_max_A", "rdf_bins", "rdf_window_ps", "rdf_stride_steps")
        if config.rdf_max_error_A is not None:
            _positive(config, source, "rdf_max_error_A")
        from md_harness.errors import HarnessError
        from md_harness.rdf import parse_pair

        try:
            parse_pair(config.rdf_pair)
        except HarnessError as exc:
            raise ConfigError(f"{source}: key 'rdf_pair': {exc}") from None
        window = config.rdf_window_ps * 1000.0 / config.timestep_fs
        if window < config.rdf_stride_steps:
            raise ConfigError(f"{source}: rdf_window_ps = {config.rdf_window_ps:g} ps is {window:.0f} steps, shorter than "
                              f"rdf_stride_steps = {config.rdf_stride_steps}: a window would hold no sample")
    elif config.rdf_reference is not None or config.rdf_max_error_A is not None:
        raise ConfigError(f"{source}: rdf_reference / rdf_max_error_A need rdf_pair (the element pair of the RDF)")
    _positive(config, source, "thermo_stride_steps", "checkpoint_every_steps", "bond_rupture_A", "density_window_ps")
    _positive(config, source, "temperature_blowup_factor", "max_initial_force_eV_A", "density_blocks")
    _positive(config, source, "warning_horizon_ps", "progress_interval_s")
    try:
        validate_thread_setting(config.threads_per_rank, "threads_per_rank")
    except ValueError as exc:
        raise ConfigError(f"{source}: key {exc}") from None
    if not 0.0 < config.warning_false_alarm_rate < 1.0:
        raise ConfigError(
            f"{source}: key 'warning_false_alarm_rate' must be between 0 and 1, got {config.warning_false_alarm_rate!r}"
        )
    if config.initial_temperature_K is not None and not config.initial_temperature_K > 0:
        # ASE's Berendsen thermostat divides by the current temperature
        raise ConfigError(f"{source}: key 'initial_temperature_K' must be > 0, got {config.initial_temperature_K}")
    if config.timestep_fs > 10:
        raise ConfigError(f"{source}: timestep_fs = {config.timestep_fs} fs is implausible (fs, not ps?)")
    if config.n_steps < 1:
        raise ConfigError(f"{source}: duration_ps {config.duration_ps} is shorter than one time step")
    if config.last_frames < 0:
        raise ConfigError(f"{source}: key 'last_frames' must be >= 0, got {config.last_frames}")
    if config.bond_margin_A < 0:
        raise ConfigError(f"{source}: key 'bond_margin_A' must be >= 0, got {config.bond_margin_A}")
    if config.bond_pairs is not None:
        for pair in config.bond_pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
                raise ConfigError(f"{source}: key 'bond_pairs' must be a list of element pairs like [[O, H]], got {pair!r}")
    bounds = config.density_bounds_g_cm3
    if len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds) or not 0 <= bounds[0] < bounds[1]:
        raise ConfigError(f"{source}: key 'density_bounds_g_cm3' must be [low, high] with 0 <= low < high, got {bounds!r}")
    if config.is_npt:
        _positive(config, source, "barostat_tau_fs", "reference_density_g_cm3")
        if config.ensemble == "npt_berendsen":
            _positive(config, source, "compressibility_per_bar")
        if config.pressure_bar is None:
            raise ConfigError(f"{source}: ensemble {config.ensemble} needs 'pressure_bar'")
        if not 0 < config.density_band_fraction < 1:
            raise ConfigError(f"{source}: key 'density_band_fraction' must be in (0, 1), got {config.density_band_fraction}")
    if config.uncertainty is not None and FACTORY_PATTERN.match(config.model) and not Path(config.model).exists():
        raise ConfigError(f"{source}: 'uncertainty' applies to .nnip model files; pass it to the factory via model_kwargs")


def preset_table() -> str:
    """Human-readable listing of every preset and its values."""
    blocks = []
    for name in list_presets():
        values = load_preset(name)
        lines = [f"{name}:"] + [f"  {k}: {v!r}" for k, v in values.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def comparable(config_dict: dict) -> dict[str, Any]:
    """The keys that must agree between a results file and the config that resumes it; a key
    the file's md-harness did not have yet counts as its default (what that version ran)."""
    out = {k: v for k, v in config_dict.items() if k not in RUN_CONTROL_KEYS and k not in PATH_KEYS}
    for name in keys_where(on_resume="must match"):
        out.setdefault(name, config_keys()[name]["default"])
    return out
