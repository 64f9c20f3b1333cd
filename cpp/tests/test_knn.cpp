// C++ tests of the k-NN core (no framework, no downloads): run by ctest.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"
#include "fastgap_knn.hpp"

namespace {

using fastgap_test::check;

bool near(double a, double b, double tol = 1e-9) { return std::fabs(a - b) <= tol; }

// One batch and its result.
struct Batch {
  std::vector<double> lattices, frac;
  std::vector<int32_t> numbers;
  std::vector<int64_t> ptr{0};
  std::vector<char> pbc;  // char, not bool: std::vector<bool> has no data()
  int k = 19;

  void add(const std::vector<double>& lattice, const std::vector<double>& f,
           const std::vector<int32_t>& z, bool px = true, bool py = true, bool pz = true) {
    lattices.insert(lattices.end(), lattice.begin(), lattice.end());
    frac.insert(frac.end(), f.begin(), f.end());
    numbers.insert(numbers.end(), z.begin(), z.end());
    ptr.push_back(ptr.back() + int64_t(z.size()));
    pbc.insert(pbc.end(), {char(px), char(py), char(pz)});
  }
};

struct Result {
  std::vector<int16_t> numbers;
  std::vector<double> distances;
  std::vector<int32_t> indices, images, counts;
  std::string error;
};

Result run(const Batch& b, int threads = 1, double min_distance = fastgap::MIN_DISTANCE) {
  fastgap::KnnInput in;
  in.lattices = b.lattices.data();
  in.frac_coords = b.frac.data();
  in.numbers = b.numbers.data();
  in.atom_ptr = b.ptr.data();
  in.pbc = reinterpret_cast<const bool*>(b.pbc.data());
  in.n_structures = int64_t(b.ptr.size()) - 1;
  in.n_atoms = int64_t(b.numbers.size());
  in.k = b.k;
  in.min_distance = min_distance;
  Result r;
  const size_t a = b.numbers.size(), k = size_t(std::max(b.k, 1));
  r.numbers.resize(a * k);
  r.distances.resize(a * k);
  r.indices.resize(a * k);
  r.images.resize(a * k * 3);
  r.counts.resize(a);
  fastgap::KnnOutput out{r.numbers.data(), r.distances.data(), r.indices.data(),
                         r.images.data(), r.counts.data()};
  try {
    fastgap::knn_batch(in, out, threads);
  } catch (const fastgap::KnnError& e) {
    r.error = e.what();
  }
  return r;
}

std::vector<double> cubic(double a) { return {a, 0, 0, 0, a, 0, 0, 0, a}; }

void test_simple_cubic() {
  Batch b;
  b.add(cubic(3.0), {0.0, 0.0, 0.0}, {29});
  Result r = run(b);
  check(r.error.empty(), "simple cubic runs: " + r.error);
  check(r.counts[0] == 19, "simple cubic: 19 neighbours");
  for (int t = 0; t < 6; ++t) check(near(r.distances[t], 3.0), "simple cubic: 6 at a");
  for (int t = 6; t < 18; ++t) check(near(r.distances[t], 3.0 * std::sqrt(2.0)), "12 at a*sqrt2");
  check(near(r.distances[18], 3.0 * std::sqrt(3.0)), "simple cubic: 19th at a*sqrt3");
  for (int t = 0; t < 19; ++t) check(r.indices[t] == 0, "simple cubic: all self images");
  // Within the first shell the images are ordered lexicographically.
  check(r.images[0] == -1 && r.images[1] == 0 && r.images[2] == 0, "first image (-1, 0, 0)");
  check(r.images[15] == 1 && r.images[16] == 0 && r.images[17] == 0, "sixth image (1, 0, 0)");
}

void test_cu3au_tie_order() {
  // Au at the corner, Cu at the face centres: the Cu centre's first shell mixes 8 Cu, 4 Au.
  Batch b;
  b.add(cubic(3.75), {0, 0, 0, 0, .5, .5, .5, 0, .5, .5, .5, 0}, {79, 29, 29, 29});
  Result r = run(b);
  check(r.error.empty(), "Cu3Au runs: " + r.error);
  const double d1 = 3.75 / std::sqrt(2.0);
  for (int t = 0; t < 12; ++t) check(near(r.distances[t], d1), "Au centre: 12 Cu at a/sqrt2");
  for (int t = 0; t < 12; ++t) check(r.numbers[t] == 29, "Au centre: first shell is Cu");
  for (int t = 12; t < 18; ++t) check(r.numbers[t] == 79, "Au centre: 6 Au at a");
  const int16_t* cu = &r.numbers[19];
  for (int t = 0; t < 8; ++t) check(cu[t] == 29, "Cu centre: 8 Cu first within the tie group");
  for (int t = 8; t < 12; ++t) check(cu[t] == 79, "Cu centre: then 4 Au");
}

void test_padding_molecule() {
  Batch b;
  b.add(cubic(10.0), {0.5, 0.5, 0.5, 0.6, 0.5, 0.5, 0.5, 0.62, 0.5}, {8, 1, 1}, false, false,
        false);
  Result r = run(b);
  check(r.error.empty(), "molecule runs: " + r.error);
  check(r.counts[0] == 2 && r.counts[1] == 2 && r.counts[2] == 2, "molecule: 2 neighbours each");
  check(near(r.distances[0], 1.0) && r.numbers[0] == 1 && r.indices[0] == 1, "O-H at 1 A");
  check(near(r.distances[1], 1.2) && r.indices[1] == 2, "O-H at 1.2 A");
  for (int t = 2; t < 19; ++t) {
    check(r.numbers[t] == 0 && std::isinf(r.distances[t]) && r.indices[t] == -1,
          "molecule: padding 0 / inf / -1");
    check(r.images[3 * t] == 0 && r.images[3 * t + 1] == 0 && r.images[3 * t + 2] == 0,
          "molecule: padding image 0");
  }
}

void test_slab_mixed_pbc() {
  Batch b;
  b.add({3, 0, 0, 0, 3, 0, 0, 0, 3}, {0.2, 0.3, 7.0}, {6}, true, true, false);
  Result r = run(b);
  check(r.error.empty(), "2D lattice runs: " + r.error);
  const double want[4] = {3.0, 3.0 * std::sqrt(2.0), 6.0, 3.0 * std::sqrt(5.0)};
  const int count[4] = {4, 4, 4, 7};
  int t = 0;
  for (int s = 0; s < 4; ++s)
    for (int c = 0; c < count[s]; ++c, ++t) check(near(r.distances[t], want[s]), "2D shells");
  for (int u = 0; u < 19; ++u) check(r.images[3 * u + 2] == 0, "no image along non-periodic c");
}

// Brute force over a generous image box: the sorted distances of the k nearest.
std::vector<double> brute_distances(const Batch& b, int i, int k) {
  const double* L = b.lattices.data();
  std::vector<double> d;
  const int n = int(b.numbers.size()), m = 6;
  for (int j = 0; j < n; ++j)
    for (int x = -m; x <= m; ++x)
      for (int y = -m; y <= m; ++y)
        for (int z = -m; z <= m; ++z) {
          if (j == i && x == 0 && y == 0 && z == 0) continue;
          double df[3] = {b.frac[3 * j] + x - b.frac[3 * i], b.frac[3 * j + 1] + y - b.frac[3 * i + 1],
                          b.frac[3 * j + 2] + z - b.frac[3 * i + 2]};
          double s = 0;
          for (int a = 0; a < 3; ++a) {
            double c = df[0] * L[a] + df[1] * L[3 + a] + df[2] * L[6 + a];
            s += c * c;
          }
          d.push_back(std::sqrt(s));
        }
  std::sort(d.begin(), d.end());
  d.resize(k);
  return d;
}

void test_skewed_cells_against_brute_force() {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 6; ++trial) {
    // Angles between the vectors down to ~20 degrees, coordinates outside [0, 1).
    double g = (20.0 + 140.0 * u(rng)) * M_PI / 180.0;
    std::vector<double> lat = {4.0, 0, 0, 3.5 * std::cos(g), 3.5 * std::sin(g), 0,
                               1.5 * u(rng), 2.0 * u(rng), 2.5 + 2.0 * u(rng)};
    Batch b;
    std::vector<double> f;
    for (int t = 0; t < 6; ++t) f.push_back(-2.0 + 5.0 * u(rng));
    b.add(lat, f, {14, 8});
    Result r = run(b, 1, 0.0);
    check(r.error.empty(), "skewed cell runs: " + r.error);
    for (int i = 0; i < 2; ++i) {
      std::vector<double> want = brute_distances(b, i, 19);
      for (int t = 0; t < 19; ++t)
        check(near(r.distances[19 * i + t], want[t], 1e-5), "skewed cell distance " +
                                                               std::to_string(t));
    }
    // The image convention: frac[j] + image is at the reported distance.
    for (int t = 0; t < 19; ++t) {
      int j = r.indices[t];
      double df[3];
      for (int a = 0; a < 3; ++a) df[a] = b.frac[3 * j + a] + r.images[3 * t + a] - b.frac[a];
      double s = 0;
      for (int a = 0; a < 3; ++a) {
        double c = df[0] * lat[a] + df[1] * lat[3 + a] + df[2] * lat[6 + a];
        s += c * c;
      }
      check(near(std::sqrt(s), r.distances[t], 1e-9), "image convention");
    }
  }
}

void test_isolated_atom_grows_radius() {
  // A dense cluster in a corner and one atom far away: the density estimate of the search
  // radius is far too small for the lone atom.
  Batch b;
  std::vector<double> f;
  std::vector<int32_t> z;
  for (int x = 0; x < 3; ++x)
    for (int y = 0; y < 3; ++y)
      for (int w = 0; w < 3; ++w) {
        f.insert(f.end(), {0.1 * x, 0.1 * y, 0.1 * w});
        z.push_back(6);
      }
  f.insert(f.end(), {0.6, 0.6, 0.6});
  z.push_back(26);
  b.add(cubic(20.0), f, z);
  Result r = run(b);
  check(r.error.empty(), "isolated atom runs: " + r.error);
  const int lone = 27;
  std::vector<double> want = brute_distances(b, lone, 19);
  for (int t = 0; t < 19; ++t)
    check(near(r.distances[19 * lone + t], want[t], 1e-9), "isolated atom distance");
}

void test_threads_agree() {
  Batch b;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int s = 0; s < 40; ++s) {
    double a = 5.0 + u(rng);
    b.add(cubic(a), {0, 0, 0, .5, .5, .5, u(rng) * .1 + .2, .25, .75}, {11, 17, 8});
  }
  Result one = run(b, 1, 0.0), many = run(b, 4, 0.0);
  check(one.error.empty() && many.error.empty(), "batch runs");
  check(one.distances == many.distances && one.indices == many.indices &&
            one.images == many.images, "1 and 4 threads give identical results");
}

void expect_error(Batch b, const std::string& fragment, double min_distance = 0.5) {
  Result r = run(b, 2, min_distance);
  check(r.error.find(fragment) != std::string::npos,
        "expected error containing '" + fragment + "', got '" + r.error + "'");
}

void test_errors() {
  Batch ok;
  ok.add(cubic(3.0), {0, 0, 0}, {1});
  Batch b = ok;
  b.add(cubic(3.0), {0, 0, 0, 0.01, 0, 0}, {1, 1});
  expect_error(b, "structure 1: atoms 0 and 1 (image (0, 0, 0)) are 0.03 A apart");
  b = ok;
  b.add(cubic(0.3), {0, 0, 0}, {1});
  expect_error(b, "structure 1: atom 0 and its own image");
  b = ok;
  b.add({3, 0, 0, 0, 3, 0, 0.5, 0.5, 1e-9}, {0, 0, 0}, {1});
  expect_error(b, "structure 1: lattice: singular");
  b = ok;
  b.numbers[0] = 0;
  expect_error(b, "numbers: expected atomic numbers in 1..118");
  b = ok;
  b.numbers[0] = 119;
  expect_error(b, "numbers: expected atomic numbers in 1..118");
  b = ok;
  b.frac[1] = std::nan("");
  expect_error(b, "frac_coords: expected finite values");
  b = ok;
  b.lattices[4] = INFINITY;
  expect_error(b, "lattice: expected finite values");
  b = ok;
  b.k = 0;
  expect_error(b, "k: expected 1..");
  b = ok;
  b.add(cubic(3.0), {}, {});
  expect_error(b, "structure 1 has 0 atoms");
  b = ok;
  b.ptr[0] = 1;
  expect_error(b, "atom_ptr: expected atom_ptr[0] == 0");
  b = ok;
  expect_error(b, "min_distance: expected a finite value >= 0", -1.0);
  b = ok;
  b.frac[0] = 2e9;
  expect_error(b, "frac_coords: expected |value| < 2**30");
}

}  // namespace

int main() {
  const std::vector<std::pair<const char*, std::function<void()>>> tests = {
      {"simple_cubic", test_simple_cubic},
      {"cu3au_tie_order", test_cu3au_tie_order},
      {"padding_molecule", test_padding_molecule},
      {"slab_mixed_pbc", test_slab_mixed_pbc},
      {"skewed_cells_against_brute_force", test_skewed_cells_against_brute_force},
      {"isolated_atom_grows_radius", test_isolated_atom_grows_radius},
      {"threads_agree", test_threads_agree},
      {"errors", test_errors},
  };
  return fastgap_test::run_all(tests);
}
