// fastgap equivalent-row grouping: the contract in one header.
//
// Atoms of one structure whose neighbour lists agree (same length, same atomic numbers, and
// distances equal after rounding to `tol`) get identical per-atom LSTM outputs, so the model
// computes one row per group. This groups them.
//
// Inputs (C-contiguous, read-only):
//   numbers   (A, L) int64  entry atomic numbers (column 0 = the centre)
//   distances (A, L) float32 Å
//   lengths   (A,) int64    valid entries per row, 0..L; entries past it are ignored
//   atom_ptr  (S + 1,) int64 atom offsets, non-decreasing, atom_ptr[0] == 0, atom_ptr[S] == A
//   tol       > 0, Å: a distance d is compared as nearbyint(double(d) / tol) (ties to even);
//             non-finite distances (and |d / tol| > 9e18) compare as one value of their own
// Outputs (A each): is_rep (bool, true for the first atom of each group in atom order) and
// slot (int64, the group's index among its structure's groups, in order of first atom).
// Groups never cross structures. The result equals fastgap.rows.group_rows on the key
// (structure, numbers, rounded distances, -1 past the length), the NumPy oracle.
//
// Errors: RowsError (std::runtime_error) naming the argument: sizes, a length outside 0..L,
// atom_ptr not as above, tol not finite and > 0.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastgap {

class RowsError : public std::runtime_error {
 public:
  explicit RowsError(const std::string& message) : std::runtime_error(message) {}
};

struct RowsInput {
  const int64_t* numbers = nullptr;   // (A, L)
  const float* distances = nullptr;   // (A, L)
  const int64_t* lengths = nullptr;   // (A,)
  const int64_t* atom_ptr = nullptr;  // (S + 1,)
  int64_t n_atoms = 0;                // A
  int64_t width = 0;                  // L
  int64_t n_structures = 0;           // S
  double tol = 1e-4;
};

// Fill is_rep (A,) and slot (A,); validates first.
void group_lists(const RowsInput& input, bool* is_rep, int64_t* slot);

}  // namespace fastgap
