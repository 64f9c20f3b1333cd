// Candidate search of the k-NN core (internal to the core; the contract is fastgap_knn.hpp).
//
// The image cloud of one structure: every (atom, lattice image) whose position can lie
// within a radius R of the home cell, binned on a uniform Cartesian grid. A query returns
// every point within r <= R of a home atom, with its approximate squared distance, by
// scanning the rows of bins that overlap the sphere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastgap {

// A point of the cloud: atom j (local index) at lattice offset n (wrapped frame).
struct Candidate {
  int32_t j;
  int32_t n[3];
};

// A query hit: `d` holds the approximate squared distance (Å^2) as returned by query();
// the ranking overwrites it with the exact distance. `c` indexes ImageGrid::points().
struct Key {
  double d;
  int32_t c;
};

class ImageGrid {
 public:
  // Build the cloud for `radius` (Å). lattice (3, 3) rows a, b, c; wrapped (n, 3)
  // fractional coordinates, in [0, 1) along periodic axes; volume = |det lattice| > 0.
  // Returns false, leaving the grid unusable, when the cloud would exceed `max_points`.
  bool build(const double* lattice, const double* wrapped, int32_t n, const bool* pbc,
             double volume, double radius, int64_t max_points);

  // Every point within `radius` (<= this->radius()) of home atom i at image 0, except
  // that point itself, appended to keys[0, m) (keys grows as needed); returns m. Exact:
  // nothing with a true distance <= radius is missed; points up to radius + slack() may
  // be included.
  // The atom's own point is dropped by setting it to NaN for the duration of the query.
  size_t query(int32_t i, double radius, std::vector<Key>& keys);

  double radius() const { return radius_; }
  // Bound on |approximate - exact| distance, Å (rounding of the Cartesian positions).
  double slack() const { return slack_; }
  const Candidate* points() const { return pts_.data(); }
  size_t size() const { return size_; }

 private:
  size_t size_ = 0;  // P, number of points
  double radius_ = 0.0;
  double slack_ = 0.0;
  double org_[3] = {};
  double edge_ = 0.0, inv_edge_ = 0.0;
  int32_t dims_[3] = {};
  // Buffers only grow; the first P (bins + 1, n) entries are valid.
  std::vector<double> x_, y_, z_;   // (P,) positions sorted by bin, x fastest
  std::vector<Candidate> pts_;      // (P,) same order
  std::vector<int32_t> start_;      // (bins + 1,) first point of each bin
  std::vector<int32_t> self_;       // (n,) point of atom i at image 0
  std::vector<double> raw_;         // (P, 3) unsorted scratch
  std::vector<Candidate> raw_pts_;  // (P,) unsorted scratch
  std::vector<int32_t> bin_;        // (P,) bin of each unsorted point
};

}  // namespace fastgap
