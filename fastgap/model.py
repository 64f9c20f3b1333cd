"""The two-level LSTM: neighbour lists -> atom vectors -> structure vector -> property.

Design (the defaults of ``ModelConfig``):

1. Each atom's list is ``[centre] + k neighbours`` (k = 19): 20 (element, distance) entries.
2. Entry vector = learned element embedding * (1 / distance). The centre is at distance 0;
   it is scaled by exactly 1 Å^-1 (as if at 1 Å), i.e. its embedding is used unscaled.
   Option ``element_features="physical"``: the element vector is the learned embedding plus
   a linear map (no bias) of a fixed, standardised table of physical descriptors
   (``fastgap.elements``: group, period, block, electronegativity, radii, ionisation energy,
   electron affinity, valence s/p/d/f counts, mass, Mendeleev number, molar volume, and
   missing-value flags); the distance scaling is unchanged.
3. A per-atom LSTM reads the 20 vectors in list order; its final hidden state is the atom
   vector. CPU inference runs it in the compiled LSTM core (``fastgap.lstm_rows``): the
   element part of its input product is computed once per element, not once per entry
   (the round-2 and structure LSTMs run there too, with dense inputs).
   Option ``angle_bins=B``: each entry's input also holds its angle signature (B values,
   ``fastgap.angles``: how the other atoms of the list sit around it, as seen from the
   centre); the data must be built with the same ``angle_bins``.
   Option ``rounds=2`` (one round of message passing through the neighbour lists): a second
   per-atom LSTM reads, for every entry, the round-1 vector of the atom that entry is, next
   to the entry's distance encoding (1/distance, centre 1 Å^-1, or the Gaussians); its final
   state is the atom vector. The data must carry ``nbr_indices`` (store schema 2); entry
   order and row sharing for this round are described in ``fastgap.rows``.
4. A per-structure LSTM reads the atom vectors in a fractional (x, y, z) order
   (``fastgap.data``); its final hidden state is the structure vector.
5. A fully connected head maps the structure vector to ``n_outputs`` values.

Variable lengths are handled with packed sequences (cuDNN on CUDA); padded entries are
never read. Outputs are in normalised units; ``target_mean`` / ``target_std`` buffers
(saved with the weights) convert them back. When a structure has several atom orders
(axis swaps) the model averages its outputs over them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastgap.data import Batch, BucketBatchSampler, StructureDataset, make_loader
from fastgap.lstm_rows import (
    by_rows,
    final_state,
    fused_final_state,
    kernel_applies,
    lstm_final_state,
)

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch

DISTANCE_ENCODINGS = ("inverse", "rbf")
POOLINGS = ("lstm", "attention", "mean")
ELEMENT_FEATURES = ("learned", "physical")
COMPOSITIONS = ("none", "physical")
ROUNDS = (1, 2)
CENTRE_INV_DISTANCE = 1.0  # Å^-1: the centre entry's scale in the "inverse" encoding
RBF_ZERO = 87.0  # exp(-87) = 1.6e-38, just above float32's smallest normal (1.2e-38)
MISSING_NBR_INDICES = (
    "rounds: this model has rounds={rounds} and needs each entry's neighbour atom index "
    "(nbr_indices), which the data lacks (a store written before schema version 2); "
    "re-featurize the structures with this fastgap (fastgap featurize INPUT --out NEW_STORE)"
)


@dataclass
class ModelConfig:
    """Hyper-parameters of ``FastGapModel``; the defaults are the design's model."""

    embed_dim: int = 32
    atom_hidden: int = 64
    struct_hidden: int = 64
    layers: int = 1
    bidirectional: bool = False
    distance_encoding: str = "inverse"
    rbf_bins: int = 16  # "rbf": Gaussians centred on 0..rbf_cutoff Å
    rbf_cutoff: float = 8.0
    pooling: str = "lstm"
    head_sizes: tuple[int, ...] = (64,)
    dropout: float = 0.0
    n_outputs: int = 1
    max_z: int = 118
    element_features: str = "learned"  # "physical": + linear map of fastgap.elements' table
    rounds: int = 1  # 2: a second per-atom LSTM over the neighbours' round-1 vectors
    # "physical": the head also reads the mean and std of the element descriptors over the
    # structure's atoms (its stoichiometry, which the neighbour lists only imply)
    composition: str = "none"
    angle_bins: int = 0  # B > 0: each entry's input also holds its angle signature

    def __post_init__(self) -> None:
        self.head_sizes = tuple(int(h) for h in self.head_sizes)
        for name in ("embed_dim", "atom_hidden", "struct_hidden", "layers", "n_outputs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.distance_encoding not in DISTANCE_ENCODINGS:
            raise ValueError(
                f"distance_encoding: expected one of {DISTANCE_ENCODINGS}, "
                f"got {self.distance_encoding!r}"
            )
        if isinstance(self.angle_bins, bool) or not isinstance(self.angle_bins, int) or (
                self.angle_bins != 0 and self.angle_bins < 2):
            raise ValueError(f"angle_bins: expected 0 or an integer >= 2, got {self.angle_bins!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {self.pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        if isinstance(self.rounds, bool) or self.rounds not in ROUNDS:
            raise ValueError(f"rounds: expected one of {ROUNDS}, got {self.rounds!r}")
        if self.element_features not in ELEMENT_FEATURES:
            raise ValueError(
                f"element_features: expected one of {ELEMENT_FEATURES}, "
                f"got {self.element_features!r}"
            )
        if self.composition not in COMPOSITIONS:
            raise ValueError(
                f"composition: expected one of {COMPOSITIONS}, got {self.composition!r}"
            )
        if "physical" in (self.element_features, self.composition) and not 1 <= self.max_z <= 118:
            raise ValueError(
                f"max_z: the physical element table describes Z = 1..118, got max_z={self.max_z}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["head_sizes"] = list(self.head_sizes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"model config: unknown fields {sorted(unknown)}")
        return cls(**data)


class FastGapModel(nn.Module):
    """Two-level LSTM over a ``fastgap.data.Batch``; forward -> (B, n_outputs) normalised."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        n_dir = 2 if cfg.bidirectional else 1
        drop = cfg.dropout if cfg.layers > 1 else 0.0
        self.embed = nn.Embedding(cfg.max_z + 1, cfg.embed_dim, padding_idx=0)
        if "physical" in (cfg.element_features, cfg.composition):
            from fastgap.elements import element_descriptors

            # saved with the weights, so a checkpoint keeps the table it was trained with
            self.register_buffer("element_table", torch.as_tensor(element_descriptors(cfg.max_z)))
        if cfg.element_features == "physical":
            # no bias: padding (row 0 = zeros) stays a zero vector, as in the embedding
            self.element_proj = nn.Linear(self.element_table.shape[1], cfg.embed_dim, bias=False)
        in_dim = cfg.embed_dim
        if cfg.distance_encoding == "rbf":
            self.register_buffer("rbf_centres", torch.linspace(0.0, cfg.rbf_cutoff, cfg.rbf_bins))
            in_dim += cfg.rbf_bins
        in_dim += cfg.angle_bins
        self.atom_lstm = nn.LSTM(
            in_dim, cfg.atom_hidden, cfg.layers, batch_first=True,
            bidirectional=cfg.bidirectional, dropout=drop,
        )
        atom_dim = cfg.atom_hidden * n_dir
        if cfg.rounds == 2:
            enc_dim = cfg.rbf_bins if cfg.distance_encoding == "rbf" else 1
            self.round_lstm = nn.LSTM(
                atom_dim + enc_dim, cfg.atom_hidden, cfg.layers, batch_first=True,
                bidirectional=cfg.bidirectional, dropout=drop,
            )  # input: an entry atom's round-1 vector next to the entry's distance encoding
        struct_dim = atom_dim
        if cfg.pooling == "lstm":
            self.struct_lstm = nn.LSTM(
                atom_dim, cfg.struct_hidden, cfg.layers, batch_first=True,
                bidirectional=cfg.bidirectional, dropout=drop,
            )
            struct_dim = cfg.struct_hidden * n_dir
        elif cfg.pooling == "attention":
            self.attn = nn.Linear(atom_dim, 1)
        if cfg.composition == "physical":
            struct_dim += 2 * self.element_table.shape[1]  # mean and std over the atoms
        head: list[nn.Module] = []
        for size in cfg.head_sizes:
            head += [nn.Linear(struct_dim, size), nn.SiLU(), nn.Dropout(cfg.dropout)]
            struct_dim = size
        head.append(nn.Linear(struct_dim, cfg.n_outputs))
        self.head = nn.Sequential(*head)
        self.register_buffer("target_mean", torch.zeros(cfg.n_outputs, dtype=torch.float64))
        self.register_buffer("target_std", torch.ones(cfg.n_outputs, dtype=torch.float64))
        # classification outputs are logits; denormalize turns them into probabilities
        self.register_buffer("target_is_class", torch.zeros(cfg.n_outputs, dtype=torch.bool))

    def entry_vectors(
        self, numbers: torch.Tensor, distances: torch.Tensor, lengths: torch.Tensor,
        angles: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, L) int64 numbers, (N, L) float Å, (N,) lengths -> (N, L, E) entry vectors.

        Entries past ``lengths`` are replaced by (0, 1 Å) first, so whatever the padding
        holds (out-of-range numbers, NaN) cannot reach the values or the gradients. With
        ``angle_bins``, ``angles`` (N, L, B) are appended (padding read as zeros).
        """
        numbers, enc = self.entry_parts(numbers, distances, lengths)
        # F.embedding gathers the same rows as table[numbers], about 5x faster on CPU
        emb = F.embedding(numbers, self.element_vectors())  # (Z + 1, E) -> (N, L, E)
        if self.config.distance_encoding == "inverse":
            x = emb * enc.to(emb.dtype)
        else:
            x = torch.cat([emb, enc.to(emb.dtype)], dim=-1)  # (N, L, E + bins)
        if self.config.angle_bins:
            valid = (numbers > 0).unsqueeze(-1)  # entry_parts set the padding's numbers to 0
            x = torch.cat([x, torch.where(valid, angles, 0.0).to(x.dtype)], dim=-1)
        return x  # (N, L, E [+ bins] [+ B])

    def entry_parts(self, numbers: torch.Tensor, distances: torch.Tensor,
                    lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two halves of each entry: (N, L) numbers with padding set to 0, and the
        (N, L, 1 or bins) distance encoding with padding read as 1 Å."""
        valid = torch.arange(numbers.shape[1], device=numbers.device) < lengths[:, None]
        return numbers * valid, self.distance_encoding(distances, valid)

    def element_vectors(self) -> torch.Tensor:
        """(max_z + 1, E) one vector per element, row 0 (padding) zero.

        The learned embedding, plus (``element_features="physical"``) the linear map of the
        descriptor table. Computed once per forward for the whole table and then gathered,
        which equals mapping every entry's descriptors (the map is linear, per row).
        """
        table = self.embed.weight
        if self.config.element_features == "physical":
            table = table + self.element_proj(self.element_table)  # (Z + 1, F) -> (Z + 1, E)
        return table

    def distance_encoding(self, distances: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(N, L) float Å and (N, L) bool valid -> (N, L, 1) 1/distance or (N, L, bins) rbf.

        Invalid entries are read as 1 Å (whatever they hold); the centre (column 0) is
        ``CENTRE_INV_DISTANCE`` in the inverse encoding.
        """
        distances = torch.where(valid, distances, torch.ones_like(distances))
        if self.config.distance_encoding == "inverse":
            centre = torch.zeros_like(distances, dtype=torch.bool)
            centre[:, 0] = True
            safe = torch.where(centre | (distances <= 0), torch.ones_like(distances), distances)
            return torch.where(centre, CENTRE_INV_DISTANCE, 1.0 / safe).unsqueeze(-1)
        width = self.config.rbf_cutoff / self.config.rbf_bins
        arg = ((distances.unsqueeze(-1) - self.rbf_centres) / width) ** 2  # (N, L, bins)
        # exp(-arg) for arg > RBF_ZERO is below float32's smallest normal number: written
        # as 0 (CPUs compute such underflowing exps, and denormals, an order slower)
        return torch.where(arg < RBF_ZERO, torch.exp(-arg.clamp(max=RBF_ZERO)), 0.0)

    def atom_vectors(self, batch: Batch) -> torch.Tensor:
        """One vector (atom_hidden * directions) per row the sequences index.

        Round 1 runs over the N atom rows. Without ``batch.atom_nbr_rows`` that is the
        result; with it, the result has one row per round-2 row: the round-1 vector of its
        atom (``rounds=1``) or the round-2 LSTM's output (``rounds=2``).
        """
        atoms = self._round1(batch.atom_numbers, batch.atom_distances,
                             batch.atom_lengths, self._angles(batch))  # (N, D)
        rows = batch.atom_nbr_rows
        if rows is None:
            if self.config.rounds > 1:
                raise ValueError(MISSING_NBR_INDICES.format(rounds=self.config.rounds))
            return atoms
        own = rows[:, 0]  # (N2,) each round-2 row's own atom row
        if self.config.rounds == 1:
            return atoms[own]
        table = torch.cat([atoms, atoms.new_zeros(1, atoms.shape[1])])  # row N: the dummy

        def round2(rows: torch.Tensor, distances: torch.Tensor,
                   lengths: torch.Tensor) -> torch.Tensor:
            valid = torch.arange(rows.shape[1], device=rows.device) < lengths[:, None]  # (R, L)
            nbr = F.embedding(torch.where(valid, rows, atoms.shape[0]), table)  # (R, L, D)
            enc = self.distance_encoding(distances, valid).to(nbr.dtype)
            return lstm_final_state(self.round_lstm, torch.cat([nbr, enc], dim=-1), lengths)

        return by_rows(round2, rows, batch.atom_distances[own], batch.atom_lengths[own])

    def _angles(self, batch: Batch) -> torch.Tensor | None:
        """``batch.atom_angles`` if this model reads them (checked), else None."""
        bins = self.config.angle_bins
        if not bins:
            return None
        got = batch.atom_angles
        if got is None or got.shape != (*batch.atom_numbers.shape, bins):
            shape = None if got is None else tuple(got.shape)
            raise ValueError(
                f"atom_angles: this model has angle_bins={bins} and needs (N, L, {bins}) "
                f"angle signatures, got {shape}; build the data with angle_bins={bins}"
            )
        return got

    def _round1(self, numbers: torch.Tensor, distances: torch.Tensor,
                lengths: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) numbers, (N, L) Å, (N,) lengths [, (N, L, B) angles] -> (N, D) the
        per-atom LSTM's vectors: all rows at once in the compiled core, else torch's LSTM
        by row chunks."""
        if kernel_applies(self.atom_lstm, distances):
            with torch.autocast(distances.device.type, enabled=False):  # float32 table
                vectors = self.element_vectors()
                if angles is not None:  # the angles (and Gaussians) as the core's dense input
                    numbers, enc = self.entry_parts(numbers, distances.float(), lengths)
                    dense = torch.where((numbers > 0).unsqueeze(-1), angles.float(), 0.0)
                    if self.config.distance_encoding == "inverse":
                        return fused_final_state(self.atom_lstm, vectors, numbers, lengths,
                                                 scale=enc[..., 0], dense=dense)
                    return fused_final_state(self.atom_lstm, vectors, numbers, lengths,
                                             dense=torch.cat([enc.float(), dense], dim=-1))
                if self.config.distance_encoding == "inverse":
                    numbers, enc = self.entry_parts(numbers, distances.float(), lengths)
                    return fused_final_state(self.atom_lstm, vectors, numbers, lengths,
                                             scale=enc[..., 0])
            # the core computes the Gaussians of the distances it reads (the valid ones)
            gaussians = (distances, self.rbf_centres,
                         self.config.rbf_cutoff / self.config.rbf_bins, RBF_ZERO)
            return fused_final_state(self.atom_lstm, vectors, numbers, lengths,
                                     gaussians=gaussians)

        def chunk(numbers: torch.Tensor, distances: torch.Tensor, lengths: torch.Tensor,
                  *angles: torch.Tensor) -> torch.Tensor:
            x = self.entry_vectors(numbers, distances, lengths, *angles)
            return final_state(self.atom_lstm, x, lengths)

        return by_rows(chunk, numbers, distances, lengths,
                       *(() if angles is None else (angles,)))

    def sequence_vectors(self, atoms: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Pool atom vectors (N, D) along each sequence -> (Q, D')."""
        seq = F.embedding(batch.seq_atoms, atoms)  # (Q, M, D); past seq_lengths masked below
        if self.config.pooling == "lstm":
            return lstm_final_state(self.struct_lstm, seq, batch.seq_lengths)
        steps = torch.arange(seq.shape[1], device=seq.device)
        mask = steps[None, :] < batch.seq_lengths[:, None]  # (Q, M)
        if self.config.pooling == "mean":
            w = mask.to(seq.dtype) / batch.seq_lengths[:, None].to(seq.dtype)
        else:
            score = self.attn(seq).squeeze(-1).masked_fill(~mask, float("-inf"))
            w = torch.softmax(score, dim=1)
        return (w.unsqueeze(-1) * seq).sum(dim=1)

    def composition_vectors(self, batch: Batch) -> torch.Tensor:
        """(Q, 2F): mean and std of the element descriptors over each sequence's atoms.

        Every atom of a structure appears once in each of its sequences, so this is the
        composition-weighted mean / std (order-free, the same for every sequence).
        """
        centre = batch.atom_numbers[:, 0]  # (N,) the atom of each row
        if batch.atom_nbr_rows is not None:
            centre = centre[batch.atom_nbr_rows[:, 0]]  # (N2,) the atom of each round-2 row
        steps = torch.arange(batch.seq_atoms.shape[1], device=centre.device)
        mask = steps[None, :] < batch.seq_lengths[:, None]  # (Q, M)
        desc = self.element_table[centre[batch.seq_atoms] * mask]  # (Q, M, F); padding -> 0
        w = (mask.to(desc.dtype) / batch.seq_lengths[:, None].to(desc.dtype)).unsqueeze(-1)
        mean = (w * desc).sum(dim=1)  # (Q, F)
        var = (w * (desc - mean.unsqueeze(1)) ** 2).sum(dim=1)
        return torch.cat([mean, torch.sqrt(var + 1e-12)], dim=-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """(B, n_outputs) normalised outputs, averaged over each structure's sequences."""
        vec = self.sequence_vectors(self.atom_vectors(batch), batch)  # (Q, D)
        if self.config.composition == "physical":
            vec = torch.cat([vec, self.composition_vectors(batch).to(vec.dtype)], dim=-1)
        out = self.head(vec)  # (Q, T)
        n = batch.index.shape[0]
        total = torch.zeros(n, out.shape[1], dtype=out.dtype, device=out.device)
        total = total.index_add(0, batch.seq_struct, out)
        count = torch.bincount(batch.seq_struct, minlength=n).to(out.dtype)
        return total / count[:, None]

    def denormalize(self, out: torch.Tensor) -> torch.Tensor:
        """Normalised outputs -> original units (float64); probabilities for classes."""
        out = out.double()
        return torch.where(
            self.target_is_class, torch.sigmoid(out), out * self.target_std + self.target_mean
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)




def predict_dataset(
    model: nn.Module,
    dataset: StructureDataset,
    indices: np.ndarray,
    *,
    tta: bool,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> np.ndarray:
    """Predictions (len(indices), n_outputs) float64 in original units, in ``indices`` order.

    The one forward path of evaluation and prediction. ``tta`` averages the outputs over
    every distinct atom order of a structure; otherwise the identity order is used.
    """
    core = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    core = getattr(core, "_orig_mod", core)
    if core.config.rounds > 1 and dataset.round_entries is None:
        raise ValueError(MISSING_NBR_INDICES.format(rounds=core.config.rounds))
    indices = np.asarray(indices, dtype=np.int64)
    sampler = BucketBatchSampler(dataset, indices, batch_size, shuffle=False, tta=tta)
    device = torch.device(device)
    out = np.empty((len(indices), core.config.n_outputs), dtype=np.float64)
    where = np.full(len(dataset), -1, dtype=np.int64)
    where[indices] = np.arange(len(indices))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in make_loader(dataset, sampler, pin_memory=device.type == "cuda"):
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                pred = model(batch)
            out[where[batch.index.cpu().numpy()]] = core.denormalize(pred.float()).cpu().numpy()
    model.train(was_training)
    return out


def predict_batch(
    model: FastGapModel,
    featurized: FeaturizedBatch,
    *,
    tta: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(S, n_outputs) float64 predictions in original units for every structure, in order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    core = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    core = getattr(core, "_orig_mod", core)
    dataset = StructureDataset(featurized, neighbour_rows=core.config.rounds > 1,
                               angle_bins=core.config.angle_bins)
    return predict_dataset(
        model, dataset, np.arange(len(dataset)), tta=tta, batch_size=batch_size, device=device
    )
