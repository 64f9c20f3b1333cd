// Equivalent-row grouping (contract: fastgap_rows.hpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "fastgap_rows.hpp"

namespace fastgap {

namespace {

[[noreturn]] void bad(const std::string& message) { throw RowsError(message); }

void validate(const RowsInput& in) {
  if (in.n_atoms < 0 || in.width < 0 || in.n_structures < 0)
    bad("sizes: expected non-negative numbers of atoms, entries and structures");
  if (!(std::isfinite(in.tol) && in.tol > 0.0))
    bad("tol: expected a finite value > 0, got " + std::to_string(in.tol));
  if (in.atom_ptr[0] != 0 || in.atom_ptr[in.n_structures] != in.n_atoms)
    bad("atom_ptr: expected offsets from 0 to " + std::to_string(in.n_atoms));
  for (int64_t s = 0; s < in.n_structures; ++s)
    if (in.atom_ptr[s + 1] < in.atom_ptr[s])
      bad("atom_ptr: expected non-decreasing offsets, structure " + std::to_string(s));
  for (int64_t a = 0; a < in.n_atoms; ++a)
    if (in.lengths[a] < 0 || in.lengths[a] > in.width)
      bad("lengths: expected 0.." + std::to_string(in.width) + ", row " + std::to_string(a) +
          " has " + std::to_string(in.lengths[a]));
}

int64_t rounded(float d, double tol) {
  const double q = std::nearbyint(double(d) / tol);
  if (!std::isfinite(q) || std::fabs(q) > 9.0e18) return std::numeric_limits<int64_t>::min();
  return int64_t(q);
}

}  // namespace

void group_lists(const RowsInput& in, bool* is_rep, int64_t* slot) {
  validate(in);
  const int64_t L = in.width;
  std::vector<int64_t> q;                          // (n, L) rounded distances of a structure
  std::vector<std::pair<uint64_t, int64_t>> order;  // (hash, local atom), sorted
  std::vector<int64_t> rep;                        // local representative of each atom
  for (int64_t s = 0; s < in.n_structures; ++s) {
    const int64_t a0 = in.atom_ptr[s], n = in.atom_ptr[s + 1] - a0;
    q.resize(size_t(n * L));
    order.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t a = a0 + i, len = in.lengths[a];
      uint64_t h = 0x9E3779B97F4A7C15ull ^ uint64_t(len);
      for (int64_t t = 0; t < len; ++t) {
        const int64_t d = rounded(in.distances[a * L + t], in.tol);
        q[size_t(i * L + t)] = d;
        h = (h ^ uint64_t(in.numbers[a * L + t])) * 0x100000001B3ull;
        h = (h ^ uint64_t(d)) * 0x100000001B3ull;
      }
      order[size_t(i)] = {h, i};
    }
    std::sort(order.begin(), order.end());
    auto same = [&](int64_t i, int64_t j) {
      const int64_t len = in.lengths[a0 + i];
      return len == in.lengths[a0 + j] &&
             std::memcmp(in.numbers + (a0 + i) * L, in.numbers + (a0 + j) * L,
                         size_t(len) * sizeof(int64_t)) == 0 &&
             std::memcmp(&q[size_t(i * L)], &q[size_t(j * L)], size_t(len) * sizeof(int64_t)) == 0;
    };
    // within each run of equal hashes (atoms ascending), an atom's representative is the
    // first earlier atom of the run with the same list
    rep.assign(size_t(n), -1);
    for (size_t lo = 0; lo < order.size();) {
      size_t hi = lo + 1;
      while (hi < order.size() && order[hi].first == order[lo].first) ++hi;
      for (size_t x = lo; x < hi; ++x) {
        const int64_t i = order[x].second;
        if (rep[size_t(i)] >= 0) continue;
        rep[size_t(i)] = i;
        for (size_t y = x + 1; y < hi; ++y)
          if (rep[size_t(order[y].second)] < 0 && same(i, order[y].second))
            rep[size_t(order[y].second)] = i;
      }
      lo = hi;
    }
    int64_t groups = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = rep[size_t(i)];
      is_rep[a0 + i] = r == i;
      slot[a0 + i] = r == i ? groups++ : slot[a0 + r];
    }
  }
}

}  // namespace fastgap
