"""Multi-model campaigns: one protocol, many models, one results file per model.

A campaign file is a run config (every key of ``md-harness run``, a preset included) with
a ``models`` list instead of a ``model`` key, and an ``output_dir``::

    preset: 3bpa-nvt-1600K
    structure: ground_state.xyz
    n_replicas: 30
    output_dir: campaign-3bpa          # <output_dir>/<label>.h5 per model, campaign.json
    models:
      - {label: shipped, model: model.nnip, uncertainty: model.ltau}
      - {label: mace, model: "mace_factory:mace_calculator", model_kwargs: {model_path: m.model}}
      - {glob: "runs/*/member_0/model.nnip"}    # label: what the wildcards matched ("a-b")

A model entry may set only the model keys (:data:`MODEL_KEYS`); everything else is the
protocol every model shares. Paths are relative to the campaign file, ``output_dir`` to the
current directory.

Why one results file per model rather than one file with a group per model: each file is
exactly what a single-model run of the same config writes (same seeds, same format), so
it can be reported, compared, resumed or repaired on its own, a broken model's file never
touches the others, and a campaign can grow by models without rewriting finished results.
"""

from __future__ import annotations

import datetime
import fnmatch
import glob as globbing
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ase_nnip.core.errors import ConfigError
from md_harness.config import HarnessConfig, _check_known, _read_yaml, build_config

#: Keys a model entry may set; every other key is the shared protocol.
MODEL_KEYS = ("label", "model", "model_kwargs", "uncertainty", "model_cutoff_A")
MANIFEST = "campaign.json"
MANIFEST_FORMAT = "md-harness-campaign"
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class CampaignModel:
    """One model of a campaign: its label and validated config, or why it cannot run."""

    label: str
    spec: dict
    config: Optional[HarnessConfig] = None
    problem: Optional[str] = None


@dataclass
class Campaign:
    source: Path
    output_dir: Path
    protocol: str
    models: list = field(default_factory=list)

    @property
    def runnable(self) -> dict:
        """{label: HarnessConfig} of the models whose configs are valid."""
        return {m.label: m.config for m in self.models if m.config is not None}

    def results_file(self, label: str) -> Path:
        return self.output_dir / f"{label}.h5"


def is_campaign_file(path) -> bool:
    """True when the YAML file at ``path`` has a ``models`` key."""
    try:
        return "models" in _read_yaml(Path(path))
    except ConfigError:
        return False


def load_campaign(path, overrides: Optional[dict] = None) -> Campaign:
    """The campaign file at ``path`` with ``overrides`` of its shared keys. A problem of the
    shared protocol is a :class:`ConfigError`; a problem of one model (a missing file, a bad
    kwarg) is recorded on that model, which is then skipped."""
    path = Path(path)
    values = _read_yaml(path)
    entries = values.pop("models", None)
    output_dir = values.pop("output_dir", None) or path.stem
    overrides = dict(overrides or {})
    output_dir = overrides.pop("output_dir", output_dir)
    if "output" in overrides:
        raise ConfigError("a campaign writes one results file per model: set output_dir, not output")
    _check_known(overrides, "--set")
    values.update(overrides)
    for key in ("model", "output", "label") + MODEL_KEYS[2:]:
        if key in values:
            raise ConfigError(f"{path}: {key!r} belongs in a model entry of 'models', not at the top level")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'models' must be a non-empty list of model entries")
    base_dir = path.resolve().parent
    # The shared protocol alone must be valid (a placeholder factory stands in for the model).
    shared = build_config({**values, "model": "placeholder:model"}, base_dir=base_dir, source=str(path))
    campaign = Campaign(path, Path(output_dir).expanduser().resolve(), shared.protocol)
    for entry in _expand(entries, base_dir, path):
        label = entry["label"]
        model = CampaignModel(label, entry)
        try:
            model.config = build_config(
                {**values, **{k: v for k, v in entry.items() if k != "glob"}, "output": str(campaign.results_file(label))},
                base_dir=base_dir, source=f"{path}, model {label!r}",
            )
        except ConfigError as err:
            model.problem = str(err)
        campaign.models.append(model)
    return campaign


def _expand(entries: list, base_dir: Path, path: Path) -> list[dict]:
    """Model entries with globs expanded and labels checked (unique, usable as file names)."""
    out = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: models[{k}] must be a mapping with a 'model' or 'glob' key, got {entry!r}")
        unknown = sorted(set(entry) - set(MODEL_KEYS) - {"glob"})
        if unknown:
            raise ConfigError(f"{path}: models[{k}] has key(s) {unknown}; a model entry may set {list(MODEL_KEYS)} "
                              f"or 'glob' (the protocol is shared)")
        if ("glob" in entry) == ("model" in entry):
            raise ConfigError(f"{path}: models[{k}] needs exactly one of 'model' and 'glob'")
        if "glob" not in entry:
            label = entry.get("label") or Path(str(entry["model"])).stem.split(":")[-1]
            out.append({**entry, "label": str(label)})
            continue
        pattern = str(entry["glob"])
        matches = sorted(globbing.glob(str(base_dir / pattern)))
        if not matches:
            raise ConfigError(f"{path}: models[{k}]: glob {pattern!r} matches no file under {base_dir}")
        regex = re.compile(fnmatch.translate(str(base_dir / pattern)).replace(".*", "(.*)").replace("[^/]*", "([^/]*)"))
        for match in matches:
            groups = regex.match(match)
            label = "-".join(g.strip("/").replace("/", "-") for g in groups.groups()) if groups and groups.groups() else Path(match).stem
            out.append({**{k2: v for k2, v in entry.items() if k2 != "glob"}, "model": match, "label": label})
    labels = [e["label"] for e in out]
    for label in labels:
        if not LABEL_PATTERN.match(label):
            raise ConfigError(f"{path}: model label {label!r} cannot name a results file: use letters, digits, '_', '.', "
                              f"'+' and '-'")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"{path}: model label(s) {duplicates} appear more than once: give each model its own label")
    return out


def write_manifest(campaign: Campaign, outcome=None, session: Optional[dict] = None) -> Path:
    """``<output_dir>/campaign.json``: every model, its results file, and whether it ran or
    why it was skipped; written atomically, sessions appended."""
    campaign.output_dir.mkdir(parents=True, exist_ok=True)
    target = campaign.output_dir / MANIFEST
    previous = json.loads(target.read_text()) if target.exists() else {}
    skipped = dict(outcome.skipped) if outcome is not None else {}
    models = []
    for m in campaign.models:
        status = "skipped" if (m.problem or m.label in skipped) else ("ran" if outcome is not None else "pending")
        models.append({"label": m.label, "model": str(m.spec.get("model")), "results": f"{m.label}.h5",
                       "status": status, "reason": m.problem or skipped.get(m.label)})
    manifest = {"format": MANIFEST_FORMAT, "source": str(campaign.source.resolve()), "protocol": campaign.protocol,
                "models": models, "sessions": previous.get("sessions", []) + ([session] if session else [])}
    temporary = target.with_suffix(f".json.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, target)
    return target


def read_manifest(path) -> dict:
    """The manifest of a campaign directory (or of its campaign.json)."""
    path = Path(path)
    target = path / MANIFEST if path.is_dir() else path
    try:
        manifest = json.loads(target.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{target}: not a readable campaign manifest ({err})") from err
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{target}: not an md-harness campaign manifest")
    manifest["directory"] = str(target.parent)
    return manifest


def campaign_results(path) -> tuple[list[Path], dict]:
    """The results files of a campaign directory, in campaign order, and {label: reason} of
    the models that did not run."""
    manifest = read_manifest(path)
    folder = Path(manifest["directory"])
    files = [folder / m["results"] for m in manifest["models"] if (folder / m["results"]).exists()]
    missing = {m["label"]: m.get("reason") or "no results file" for m in manifest["models"]
               if not (folder / m["results"]).exists()}
    return files, missing


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_campaign_file(path, overrides: Optional[dict] = None, *, comm=None, command: str = ""):
    """Load and run the campaign file at ``path`` (every model's launch checks first; models
    that cannot run are skipped and recorded), keeping ``<output_dir>/campaign.json`` up to
    date. Returns (Campaign, CampaignOutcome) on rank 0 and (Campaign, None) elsewhere; raises
    :class:`ConfigError` when no model can run."""
    from md_harness.runner import run_models

    campaign = load_campaign(path, overrides)
    rank = comm.Get_rank() if comm is not None else 0
    problems = {m.label: m.problem for m in campaign.models if m.problem}
    if not campaign.runnable:
        raise ConfigError("no model of the campaign can run: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    if rank == 0:
        write_manifest(campaign)
    started = now()
    outcome = run_models(campaign.runnable, comm=comm, command=command)
    if outcome is not None:
        outcome.skipped.update(problems)
        write_manifest(campaign, outcome, {"start": started, "end": now(), "command": command})
    return campaign, outcome
