// fastgap k-nearest-neighbour core: the whole contract in one header.
//
// For every atom of a batch of structures (crystals, slabs, wires or molecules) find its k
// nearest atoms over all periodic images, in a fixed order that does not depend on atom
// order, origin or orientation (the sequence is read in order by a model).
//
// Inputs (all arrays C-contiguous, owned by the caller, read-only):
//   lattices     (S, 3, 3) float64, Å. Rows are the lattice vectors a, b, c of structure s.
//   frac_coords  (A, 3) float64, fractional coordinates, any real values. Along periodic
//                axes they are wrapped into [0, 1) internally; along non-periodic axes they
//                are used as given (a molecule may stick out of its box).
//   numbers      (A,) int32, atomic numbers 1..118.
//   atom_ptr     (S + 1,) int64, atom_ptr[0] == 0, strictly increasing, atom_ptr[S] == A:
//                atoms of structure s are [atom_ptr[s], atom_ptr[s + 1]).
//   pbc          (S, 3) bool, periodicity along a, b, c. Along a non-periodic axis there
//                are no images; with all three false the lattice is only a box.
//   k            1..MAX_K neighbours per atom.
//   tie_tol      >= 0, Å: distance tie tolerance (the contract value is TIE_TOL).
//   min_distance >= 0, Å: two atoms closer than this are an error (contract: MIN_DISTANCE).
//
// Outputs (A rows each; written by knn_batch, allocated by the caller):
//   numbers   (A, k) int16   neighbour atomic numbers
//   distances (A, k) float64 Å
//   indices   (A, k) int32   neighbour index local to its structure (0-based)
//   images    (A, k, 3) int32 lattice offsets relative to the INPUT (unwrapped) fractional
//             coordinates: the neighbour sits at frac[indices] + images.
//   counts    (A,) int32     number of valid entries (k unless fewer atoms are reachable).
// The atom itself at image (0, 0, 0) is never in its own list; its periodic images are.
// Padding (entries counts[i]..k-1): number 0, distance +inf, index -1, image (0, 0, 0).
// Fewer than k reachable atoms only happens without any periodic axis.
//
// Order. Candidates are sorted by exact distance and cut into tie groups by a chained gap
// rule: a new group starts where the gap to the previous distance exceeds tie_tol. Within a
// group entries are ordered by atomic number (ascending), then exact distance, then
// neighbour index, then image (lexicographic). Truncation to k happens after this ordering,
// and the search radius always contains the whole tie group of the k-th entry.
// Distances are |((frac_w[j] + n) - frac_w[i]) @ lattice| with frac_w the wrapped
// coordinates and n the integer offset in the wrapped frame.
//
// Errors: a KnnError (std::runtime_error) whose message names the argument and, for
// per-structure problems, the structure index. Raised for: inconsistent array sizes;
// k outside 1..MAX_K; tie_tol or min_distance negative or non-finite; atom_ptr not starting
// at 0, not strictly increasing (an empty structure) or not ending at A; non-finite lattice
// or coordinates; |frac| >= 2**30 on a periodic axis (images would overflow int32); atomic
// numbers outside 1..118; a singular or near-singular lattice on periodic input
// (|det| < 1e-6 |a||b||c|); two atoms, or an atom and its own image, closer than
// min_distance (the message names the structure, both atoms, the image and the distance);
// a neighbour search whose image cloud (the atom images within the search radius of the
// cell) would exceed MAX_CANDIDATES points. When several
// structures are bad, the one with the lowest index is reported. The core never crashes or
// hangs on bad input.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastgap {

// 2**-15 Å: a binary value so that decimal lattice constants do not land on it.
constexpr double TIE_TOL = 1.0 / 32768.0;
constexpr double MIN_DISTANCE = 0.5;
constexpr int MAX_Z = 118;
constexpr int MAX_K = 1 << 16;
constexpr double SINGULAR_RTOL = 1e-6;
constexpr int64_t MAX_CANDIDATES = int64_t(1) << 24;

class KnnError : public std::runtime_error {
 public:
  explicit KnnError(const std::string& message) : std::runtime_error(message) {}
};

struct KnnInput {
  const double* lattices = nullptr;   // (S, 3, 3)
  const double* frac_coords = nullptr;  // (A, 3)
  const int32_t* numbers = nullptr;   // (A,)
  const int64_t* atom_ptr = nullptr;  // (S + 1,)
  const bool* pbc = nullptr;          // (S, 3)
  int64_t n_structures = 0;           // S
  int64_t n_atoms = 0;                // A
  int k = 19;
  double tie_tol = TIE_TOL;
  double min_distance = MIN_DISTANCE;
};

struct KnnOutput {
  int16_t* numbers = nullptr;    // (A, k)
  double* distances = nullptr;   // (A, k)
  int32_t* indices = nullptr;    // (A, k)
  int32_t* images = nullptr;     // (A, k, 3)
  int32_t* counts = nullptr;     // (A,)
};

// Check the batch-level arguments (sizes, k, tolerances, atom_ptr); throws KnnError.
void validate_batch(const KnnInput& input);

// Fill `output` for every atom of the batch. num_threads = 0 uses all hardware threads;
// structures are distributed dynamically over std::threads. Throws KnnError.
void knn_batch(const KnnInput& input, const KnnOutput& output, int num_threads);

// Number of threads knn_batch would use for a request of `num_threads` (0 = all).
int resolve_threads(int num_threads);

}  // namespace fastgap
