"""The benchmark tasks: data, targets, filters, split, settings and published values.

Each `Task` names a dataset folder under the data root (``<root>/<dataset>/structures.jsonl.gz``),
its targets, filters (``where``, ``max_z``), a fixed split file, derived targets, training
overrides for the ``fast`` (smoke) and ``full`` settings and the published values to show
beside ours. Published values come from other datasets, sizes and protocols: they are
context, not like-for-like comparisons; each `Reference` says how it was obtained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("train", "transfer", "symmetry")
SETTINGS = ("fast", "full")


@dataclass(frozen=True)
class Reference:
    """A published value: ``model`` reached ``value`` (``metric``, ``unit``) per ``source``.

    ``target`` names the task target it belongs to ("" = every target of the task).
    """

    model: str
    value: float
    metric: str
    unit: str
    source: str
    protocol: str
    target: str = ""


@dataclass
class Setting:
    """How much of a task runs: structures sampled from the split (0 = all) and training.

    ``train`` holds `fastgap.train.TrainConfig` field overrides (``model`` a dict of
    `fastgap.model.ModelConfig` fields).
    """

    n_structures: int = 0
    train: dict[str, Any] = field(default_factory=dict)


FAST_MODEL = {"embed_dim": 16, "atom_hidden": 32, "struct_hidden": 32, "head_sizes": (32,)}
FAST = Setting(400, {"epochs": 2, "batch_size": 32, "patience": 2, "model": FAST_MODEL})
FULL = Setting(0, {"epochs": 60, "batch_size": 64, "patience": 15})


@dataclass
class Task:
    """One benchmark task.

    Attributes:
        name: unique, used for output files.
        kind: "train" (fit and test), "transfer" (apply ``model_from``'s model, no training)
            or "symmetry" (the symmetry study on ``model_from``'s data).
        dataset: folder under the data root holding ``structures.jsonl.gz``.
        targets: target names (properties, ``is_metal`` or names made by ``derive``).
        split: split file name under the splits directory ("" = none: transfer sets).
        where, max_z, classification: passed to `fastgap.train.TrainConfig`.
        derive: ``(new_name, "log10", source)``: log10 of a property; values <= 0 become
            missing and are counted.
        settings: "fast" / "full" -> `Setting`.
        references: published values. goals: target -> MAE we aim for.
        model_from: the task whose trained model a transfer / symmetry task uses.
        notes: protocol notes shown in the results.
    """

    name: str
    kind: str
    dataset: str
    targets: tuple[str, ...]
    description: str
    split: str = ""
    where: str = ""
    max_z: int | None = None
    classification: tuple[str, ...] = ()
    derive: tuple[tuple[str, str, str], ...] = ()
    settings: dict[str, Setting] = field(default_factory=lambda: {"fast": FAST, "full": FULL})
    references: tuple[Reference, ...] = ()
    goals: dict[str, float] = field(default_factory=dict)
    model_from: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        if self.kind != "train" and not self.model_from:
            raise ValueError(f"model_from: a {self.kind} task needs the task whose model it uses")
        for new, op, _ in self.derive:
            if op != "log10":
                raise ValueError(f"derive: expected op 'log10' for {new!r}, got {op!r}")
        missing = [s for s in SETTINGS if s not in self.settings]
        if missing:
            raise ValueError(f"settings: expected entries for {SETTINGS}, missing {missing}")


_MP_NOTE = ("MP structures from the CGCNN id list (about 2020 release); fixed seeded 80/10/10 "
            "split of all records, restricted to the task's filter.")
_MATBENCH = "Matbench v0.1 (Dunn et al., npj Comput. Mater. 6, 138, 2020)"
_MB_PROTOCOL = "10,987 MP structures, nested 5-fold CV"


def _ref(model: str, value: float, unit: str, source: str, protocol: str,
         target: str = "") -> Reference:
    return Reference(model, value, "MAE", unit, source, protocol, target)


GAP_REFS = (
    _ref("original two-level LSTM design", 0.27, "eV", "design paper (AFLOW PBE gaps)",
         "about 28,600 AFLOW ICSD structures, non-zero gaps; reported range 0.27-0.30 eV"),
    _ref("MEGNet", 0.33, "eV", "Chen et al., Chem. Mater. 31, 3564 (2019)",
         "non-zero MP gaps (about 36,700 structures)"),
    _ref("CGCNN", 0.388, "eV", "Xie & Grossman, PRL 120, 145301 (2018)",
         "16,458 non-zero MP gaps"),
)
EFORM_REFS = (
    _ref("CGCNN", 0.039, "eV/atom", "Xie & Grossman, PRL 120, 145301 (2018)",
         "28,046 MP structures"),
    _ref("MEGNet", 0.028, "eV/atom", "Chen et al., Chem. Mater. 31, 3564 (2019)",
         "about 60,000 MP structures (2018 release)"),
)
LOGK_REFS = (
    _ref("CGCNN", 0.071, "log10(GPa)", _MATBENCH, _MB_PROTOCOL, "log10_K_VRH"),
    _ref("Matbench leaders", 0.05, "log10(GPa)", _MATBENCH + " leaderboard", _MB_PROTOCOL,
         "log10_K_VRH"),
)
LOGG_REFS = (
    _ref("CGCNN", 0.090, "log10(GPa)", _MATBENCH, _MB_PROTOCOL, "log10_G_VRH"),
    _ref("Matbench leaders", 0.07, "log10(GPa)", _MATBENCH + " leaderboard", _MB_PROTOCOL,
         "log10_G_VRH"),
)
QM9_GAP_REFS = (
    _ref("MEGNet", 0.066, "eV", "Chen et al., Chem. Mater. 31, 3564 (2019)",
         "about 110,000 training molecules", "gap_eV"),
    _ref("SchNet", 0.063, "eV", "Schütt et al., J. Chem. Phys. 148, 241722 (2018)",
         "110,000 training molecules", "gap_eV"),
)
_ELASTIC_DERIVE = (("log10_K_VRH", "log10", "K_VRH_GPa"), ("log10_G_VRH", "log10", "G_VRH_GPa"))
_QM9_FULL = Setting(0, {"epochs": 30, "batch_size": 128, "patience": 8})


def default_tasks() -> list[Task]:
    """The ``default`` suite, in run order (a task's ``model_from`` comes before it)."""
    gap = {"dataset": "mp_gap36k", "split": "mp_gap36k.json", "max_z": 85}
    return [
        Task("gap_nonzero", "train", targets=("band_gap_eV",), where="band_gap_eV > 0",
             description="MP band gap, non-zero gaps only, elements Z <= 85",
             references=GAP_REFS, notes=_MP_NOTE, **gap),
        Task("gap_all", "train", targets=("band_gap_eV",),
             description="MP band gap, all structures incl. metals, elements Z <= 85",
             notes=_MP_NOTE + " The transfer and symmetry tasks use this model.", **gap),
        Task("metal", "train", targets=("is_metal",),
             description="metal (gap = 0) vs non-metal classification on mp_gap36k",
             notes=_MP_NOTE, **gap),
        Task("eform_gap36k", "train", targets=("formation_energy_eV_per_atom",),
             description="formation energy per atom on mp_gap36k", references=EFORM_REFS,
             goals={"formation_energy_eV_per_atom": 0.035}, notes=_MP_NOTE, **gap),
        Task("eform_4k", "train", "mp_eform4k", ("formation_energy_eV_per_atom",),
             "formation energy per atom on mp_eform4k (FLLA 2015 set)", split="mp_eform4k.json",
             references=EFORM_REFS, goals={"formation_energy_eV_per_atom": 0.035}),
        Task("elastic", "train", "mp_elastic3k", ("log10_K_VRH", "log10_G_VRH"),
             "log10 bulk and shear moduli (VRH, GPa), one two-target model",
             split="mp_elastic3k.json", derive=_ELASTIC_DERIVE,
             references=LOGK_REFS + LOGG_REFS, goals={"log10_K_VRH": 0.06, "log10_G_VRH": 0.08},
             notes="Values <= 0 GPa are dropped per target (counted); de Jong 2015 MP set."),
        Task("qm9_orbitals", "train", "qm9", ("homo_eV", "lumo_eV", "gap_eV"),
             "QM9 HOMO, LUMO and gap (eV, B3LYP) in one three-target model", split="qm9.json",
             settings={"fast": FAST, "full": _QM9_FULL}, references=QM9_GAP_REFS,
             goals={"gap_eV": 0.10},
             notes="Molecules: non-periodic neighbour lists, padded and masked below 20 atoms."),
        Task("qm9_gap", "train", "qm9", ("gap_eV",), "QM9 HOMO-LUMO gap (eV) alone",
             split="qm9.json", settings={"fast": FAST, "full": _QM9_FULL},
             references=QM9_GAP_REFS, goals={"gap_eV": 0.10},
             notes="The single-target counterpart of qm9_orbitals."),
        Task("transfer_jarvis", "transfer", "jarvis_sample50", ("band_gap_eV",),
             "gap_all model applied to JARVIS-DFT (OptB88vdW gaps), no training on it",
             model_from="gap_all",
             notes="Different functional (OptB88vdW vs PBE): a transfer check, not a test."),
        Task("transfer_dielectric", "transfer", "mp_dielectric1k", ("band_gap_eV",),
             "gap_all model applied to mp_dielectric1k (another MP release), no training on it",
             model_from="gap_all",
             notes="Same method, different MP release: gaps of the same material differ "
                   "by 0.16 eV on average between releases; some structures may be in training."),
        Task("symmetry", "symmetry", targets=("band_gap_eV",),
             description="prediction spread over equivalent descriptions of test crystals, "
                         "models with and without axis-swap augmentation, with and without TTA",
             model_from="gap_all", **gap),
    ]


SUITES = {"default": default_tasks}


def suite_tasks(suite: str, names: list[str] | None = None) -> list[Task]:
    """The tasks of ``suite`` (all, or ``names`` plus the tasks they depend on, in order)."""
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {sorted(SUITES)}, got {suite!r}")
    tasks = SUITES[suite]()
    if not names:
        return tasks
    by_name = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"tasks: unknown {unknown}; suite {suite!r} has {sorted(by_name)}")
    wanted = set(names)
    for n in names:
        if by_name[n].model_from:
            wanted.add(by_name[n].model_from)
    return [t for t in tasks if t.name in wanted]
