// Implementation of the contract in fastgap_knn.hpp.
//
// Per structure: wrap coordinates along periodic axes and build the image cloud (every
// atom image that can lie within a radius R of the home cell) on a uniform Cartesian grid
// (image_grid.hpp); R starts from the atomic density. Per atom: take every grid point
// within r <= R (approximate squared distances from the Cartesian positions), rank them by
// a branch-free count (nth_element beyond 64), compute exact distances only for the points that may share its
// tie group, then sort and order that head by the tie rule. An atom whose k-th tie group
// does not lie strictly inside r grows r; atoms that outgrow R are redone on a grid built
// for the largest radius they need. Without any periodic axis the grid holds the atoms
// themselves and r covers them all.
#include "fastgap_knn.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "image_grid.hpp"

namespace fastgap {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMaxFrac = 1073741824.0;  // 2**30
// First radius = density estimate * this; tuned on Materials Project structures.
constexpr double kRadiusSafety = 1.12;

struct Entry {
  double d;  // exact distance, Å
  int32_t z;
  int32_t j;
  int32_t img[3];  // offset relative to the input coordinates
};

std::string fmt(const char* format, double a, double b = 0.0, double c = 0.0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

[[noreturn]] void fail(int64_t s, const std::string& what) {
  throw KnnError("structure " + std::to_string(s) + ": " + what);
}

bool entry_less(const Entry& p, const Entry& q) {
  if (p.z != q.z) return p.z < q.z;
  if (p.d != q.d) return p.d < q.d;
  if (p.j != q.j) return p.j < q.j;
  return std::lexicographical_compare(p.img, p.img + 3, q.img, q.img + 3);
}

// Insertion sort: the lists sorted here are a few dozen entries long, where it beats
// std::sort's set-up; `less` is a strict weak order.
template <typename T, typename Less>
void small_sort(T* first, T* last, Less less) {
  for (T* p = first + 1; p < last; ++p) {
    T value = *p;
    T* q = p;
    for (; q > first && less(value, q[-1]); --q) *q = q[-1];
    *q = value;
  }
}

constexpr size_t kSmallSort = 48;

// Up to this many candidates are ranked by a branch-free count (see sort_by_key); more
// go through nth_element.
constexpr size_t kRankMax = 64;

inline bool key_less(const Key& p, const Key& q) { return p.d < q.d; }

// Reusable per-thread state; one structure at a time. Buffers only grow, so the per-atom
// loop allocates nothing once they have reached the batch's largest size.
class Worker {
 public:
  Worker(const KnnInput& in, const KnnOutput& out) : in_(in), out_(out) {}
  void run(int64_t s);

 private:
  void prepare(int64_t s);
  void build_grid(double radius);
  // Sort the candidates keys_[0, m_) by exact distance completely up to the end of the
  // k-th entry's tie group; return that group's last distance (the last one when fewer
  // than k candidates exist) and set head_ to the number of entries up to it.
  double rank_head(int32_t i);
  void sort_by_key();
  double select_head(int32_t i, double thr, size_t p);
  void exact_distances(int32_t i, size_t begin, size_t end);
  void check_min_distance(int32_t i);
  void fill_entries(int32_t i);
  void order_groups(size_t limit);
  void finish_atom(int32_t i);
  void write(int32_t i);

  const KnnInput& in_;
  const KnnOutput& out_;
  int64_t s_ = 0;     // structure index
  int64_t base_ = 0;  // first global atom index of the structure
  int32_t n_ = 0;
  bool pbc_[3] = {false, false, false};
  bool any_pbc_ = false;
  double lat_[9] = {};
  double volume_ = 0.0;  // |det lattice|, Å^3
  double radius0_ = 0.0;
  std::vector<double> fw_;        // (n, 3) wrapped fractional coordinates
  std::vector<int32_t> shift_;    // (n, 3) floor of the input coordinates (periodic axes)
  ImageGrid grid_;
  std::vector<Key> keys_;         // [0, m_) candidates of the current atom
  std::vector<Key> ranked_ = std::vector<Key>(kRankMax);  // sort_by_key scratch
  size_t m_ = 0;
  size_t head_ = 0;
  std::vector<Entry> sel_;        // (head_,) in contract order after order_groups
  std::vector<double> atom_radius_;
  std::vector<int32_t> pending_, deferred_;
  int32_t bad_atom_ = -1;  // lowest atom closer than min_distance to its nearest neighbour
  std::string bad_message_;
};

void Worker::prepare(int64_t s) {
  s_ = s;
  base_ = in_.atom_ptr[s];
  n_ = static_cast<int32_t>(in_.atom_ptr[s + 1] - base_);
  any_pbc_ = false;
  for (int a = 0; a < 3; ++a) {
    pbc_[a] = in_.pbc[3 * s + a];
    any_pbc_ = any_pbc_ || pbc_[a];
  }
  for (int t = 0; t < 9; ++t) {
    lat_[t] = in_.lattices[9 * s + t];
    if (!std::isfinite(lat_[t])) fail(s, "lattice: expected finite values, found NaN or inf");
  }
  const double* a = lat_;
  const double* b = lat_ + 3;
  const double* c = lat_ + 6;
  double axb[3] = {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                   a[0] * b[1] - a[1] * b[0]};
  double det = axb[0] * c[0] + axb[1] * c[1] + axb[2] * c[2];
  double len[3];
  for (int v = 0; v < 3; ++v)
    len[v] = std::sqrt(lat_[3 * v] * lat_[3 * v] + lat_[3 * v + 1] * lat_[3 * v + 1] +
                       lat_[3 * v + 2] * lat_[3 * v + 2]);
  if (any_pbc_ && !(std::fabs(det) >= SINGULAR_RTOL * len[0] * len[1] * len[2]) ) {
    fail(s, fmt("lattice: singular or near-singular on periodic input (|det| = %.6g < "
                "1e-6 |a||b||c| = %.6g)", std::fabs(det), SINGULAR_RTOL * len[0] * len[1] * len[2]));
  }
  fw_.resize(3 * size_t(n_));
  shift_.assign(3 * size_t(n_), 0);
  for (int32_t i = 0; i < n_; ++i) {
    int32_t z = in_.numbers[base_ + i];
    if (z < 1 || z > MAX_Z)
      fail(s, "numbers: expected atomic numbers in 1..118, atom " + std::to_string(i) +
                  " has " + std::to_string(z));
    for (int a = 0; a < 3; ++a) {
      double f = in_.frac_coords[3 * (base_ + i) + a];
      if (!std::isfinite(f))
        fail(s, "frac_coords: expected finite values, atom " + std::to_string(i) +
                    " has NaN or inf");
      if (pbc_[a]) {
        if (std::fabs(f) >= kMaxFrac)
          fail(s, fmt("frac_coords: expected |value| < 2**30 on periodic axes, atom %.0f has "
                      "%.6g", i, f));
        double fl = std::floor(f);
        double w = f - fl;
        if (w >= 1.0) {  // f slightly below an integer
          w = 0.0;
          fl += 1.0;
        }
        f = w;
        shift_[3 * i + a] = static_cast<int32_t>(fl);
      }
      fw_[3 * i + a] = f;
    }
  }
  volume_ = std::fabs(det);
  if (!any_pbc_) return;
  for (int v = 0; v < 3; ++v) {
    if (pbc_[v] && len[v] < in_.min_distance) {
      fail(s, fmt("atom 0 and its own image along lattice vector %.0f are %.6g A apart, "
                  "closer than min_distance = %.6g A", v, len[v], in_.min_distance));
    }
  }
  radius0_ = kRadiusSafety * std::cbrt(3.0 * (in_.k + 1) * volume_ / n_ / (4.0 * kPi));
}

// The grid for `radius`; without periodic axes `radius` is ignored and the grid holds the
// atoms with a radius that reaches all of them.
void Worker::build_grid(double radius) {
  if (!any_pbc_) {
    double lo[3], hi[3];
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::numeric_limits<double>::infinity();
      hi[a] = -lo[a];
    }
    for (int32_t j = 0; j < n_; ++j) {
      const double* f = &fw_[3 * j];
      for (int a = 0; a < 3; ++a) {
        const double x = f[0] * lat_[a] + f[1] * lat_[3 + a] + f[2] * lat_[6 + a];
        lo[a] = std::min(lo[a], x);
        hi[a] = std::max(hi[a], x);
      }
    }
    double diag2 = 0.0;
    for (int a = 0; a < 3; ++a) diag2 += (hi[a] - lo[a]) * (hi[a] - lo[a]);
    radius = 1.001 * std::sqrt(diag2) + 1.0;
  }
  if (!grid_.build(lat_, fw_.data(), n_, pbc_, volume_, radius, MAX_CANDIDATES)) {
    fail(s_, "neighbour search exceeds MAX_CANDIDATES" +
                 fmt(" (radius %.6g A); the lattice is too thin or the atoms too dense",
                     radius));
  }
}

void Worker::exact_distances(int32_t i, size_t begin, size_t end) {
  // In the input frame as the contract states.
  const Candidate* pts = grid_.points();
  Key* keys = keys_.data();
  const double* fi = &fw_[3 * i];
  const double* L = lat_;
  for (size_t t = begin; t < end; ++t) {
    const Candidate& c = pts[keys[t].c];
    const double* fj = &fw_[3 * c.j];
    const double d0 = fj[0] + c.n[0] - fi[0], d1 = fj[1] + c.n[1] - fi[1],
                 d2 = fj[2] + c.n[2] - fi[2];
    const double x = d0 * L[0] + d1 * L[3] + d2 * L[6];
    const double y = d0 * L[1] + d1 * L[4] + d2 * L[7];
    const double z = d0 * L[2] + d1 * L[5] + d2 * L[8];
    keys[t].d = std::sqrt(x * x + y * y + z * z);
  }
}

// Sorts keys_[0, m_), m_ <= kRankMax, by approximate distance. The 32-bit sort key is the
// float of the approximate squared distance (its bits order like the value, as it is not
// negative) with the low 6 bits replaced by the position, so that keys are distinct and
// each one's rank is a branch-free, vectorisable count of the smaller keys. The order is
// only approximate (the float is about 1e-5 relative); the exact pass corrects it.
void Worker::sort_by_key() {
  const size_t m = m_;
  const size_t padded = (m + 7) & ~size_t(7);
  alignas(32) int32_t key[kRankMax];
  Key* keys = keys_.data();
  for (size_t t = 0; t < m; ++t) {
    const float f = static_cast<float>(keys[t].d);
    int32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    key[t] = (bits & ~int32_t(kRankMax - 1)) | static_cast<int32_t>(t);
  }
  for (size_t t = m; t < padded; ++t) key[t] = std::numeric_limits<int32_t>::max();
  Key* ranked = ranked_.data();
  for (size_t t = 0; t < m; ++t) {
    const int32_t mine = key[t];
    int32_t rank = 0;
    for (size_t u = 0; u < padded; ++u) rank += key[u] < mine;
    ranked[rank] = keys[t];
  }
  std::copy(ranked, ranked + m, keys);
}

double Worker::rank_head(int32_t i) {
  const size_t m = m_;
  const size_t k = static_cast<size_t>(in_.k);
  Key* keys = keys_.data();
  if (m <= k) {
    exact_distances(i, 0, m);
    small_sort(keys, keys + m, key_less);
    head_ = m;
    return m == 0 ? 0.0 : keys[m - 1].d;
  }
  // Exact distances and approximate ones differ by at most slack, so the k points with
  // the smallest approximate distances lie within thr.
  double kth;
  if (m <= kRankMax) {
    sort_by_key();
    kth = 0.0;
    for (size_t t = 0; t < k; ++t) kth = std::max(kth, keys[t].d);
  } else {
    std::nth_element(keys, keys + (k - 1), keys + m, key_less);
    kth = keys[k - 1].d;
  }
  return select_head(i, std::sqrt(kth) + grid_.slack() + 64.0 * in_.tie_tol, k);
}

// Given that keys_[0, p) hold at least k points within thr, compute exact distances only
// for the points that may share the k-th entry's tie group: every point left out is
// farther than thr.
double Worker::select_head(int32_t i, double thr, size_t p) {
  const size_t m = m_;
  const size_t k = static_cast<size_t>(in_.k);
  const double tol = in_.tie_tol;
  const double slack = grid_.slack();
  Key* keys = keys_.data();
  size_t exact = 0;
  for (;;) {
    const double a2 = (thr + slack) * (thr + slack);
    for (size_t t = p; t < m; ++t) {  // keeps the approximate order of sort_by_key
      if (keys[t].d <= a2) std::swap(keys[p++], keys[t]);
    }
    exact_distances(i, exact, p);
    exact = p;
    if (p <= kSmallSort) {
      small_sort(keys, keys + p, key_less);
    } else {
      std::sort(keys, keys + p, key_less);
    }
    size_t g = k - 1;
    while (g + 1 < p && keys[g + 1].d - keys[g].d <= tol) ++g;
    if (p == m || keys[g].d + tol <= thr) {
      head_ = g + 1;
      return keys[g].d;
    }
    thr = keys[g].d + 64.0 * tol;
  }
}

// Records the error of the lowest-index atom that is closer than min_distance to its
// nearest neighbour; run() raises it once the structure is done.
void Worker::check_min_distance(int32_t i) {
  if (m_ == 0 || !(keys_[0].d < in_.min_distance)) return;
  if (bad_atom_ >= 0 && bad_atom_ < i) return;
  const Candidate& c = grid_.points()[keys_[0].c];
  int32_t img[3];
  for (int a = 0; a < 3; ++a) img[a] = c.n[a] - shift_[3 * c.j + a] + shift_[3 * i + a];
  std::string who = c.j == i ? "atom " + std::to_string(i) + " and its own image"
                             : "atoms " + std::to_string(i) + " and " + std::to_string(c.j);
  bad_atom_ = i;
  bad_message_ = who + " (image (" + std::to_string(img[0]) + ", " + std::to_string(img[1]) +
                 ", " + std::to_string(img[2]) + "))" +
                 fmt(" are %.6g A apart, closer than min_distance = %.6g A", keys_[0].d,
                     in_.min_distance);
}

void Worker::fill_entries(int32_t i) {
  if (sel_.size() < head_) sel_.resize(std::max(head_, 2 * sel_.size()));
  const Candidate* pts = grid_.points();
  const int32_t* si = &shift_[3 * i];
  const int32_t* numbers = in_.numbers + base_;
  for (size_t t = 0; t < head_; ++t) {
    const Candidate& c = pts[keys_[t].c];
    const int32_t* sj = &shift_[3 * c.j];
    Entry& e = sel_[t];
    e.d = keys_[t].d;
    e.z = numbers[c.j];
    e.j = c.j;
    for (int a = 0; a < 3; ++a) e.img[a] = c.n[a] - sj[a] + si[a];
  }
}

// Reorder the tie groups that start before `limit` by (Z, distance, index, image).
void Worker::order_groups(size_t limit) {
  size_t start = 0;
  const size_t m = head_;
  Entry* sel = sel_.data();
  while (start < limit && start < m) {
    size_t end = start + 1;
    while (end < m && sel[end].d - sel[end - 1].d <= in_.tie_tol) ++end;
    if (end - start > kSmallSort) {
      std::sort(sel + start, sel + end, entry_less);
    } else if (end - start > 1) {
      small_sort(sel + start, sel + end, entry_less);
    }
    start = end;
  }
}

void Worker::finish_atom(int32_t i) {
  check_min_distance(i);
  fill_entries(i);
  order_groups(std::min(size_t(in_.k), head_));
  write(i);
}

void Worker::write(int32_t i) {
  const size_t k = static_cast<size_t>(in_.k);
  const size_t row = static_cast<size_t>(base_ + i);
  const size_t count = std::min(k, head_);
  int16_t* numbers = out_.numbers + row * k;
  double* distances = out_.distances + row * k;
  int32_t* indices = out_.indices + row * k;
  int32_t* images = out_.images + row * k * 3;
  for (size_t t = 0; t < count; ++t) {
    const Entry& e = sel_[t];
    numbers[t] = static_cast<int16_t>(e.z);
    distances[t] = e.d;
    indices[t] = e.j;
    images[3 * t] = e.img[0];
    images[3 * t + 1] = e.img[1];
    images[3 * t + 2] = e.img[2];
  }
  for (size_t t = count; t < k; ++t) {
    numbers[t] = 0;
    distances[t] = std::numeric_limits<double>::infinity();
    indices[t] = -1;
    images[3 * t] = images[3 * t + 1] = images[3 * t + 2] = 0;
  }
  out_.counts[row] = static_cast<int32_t>(count);
}

// Every atom on one grid; an atom whose k-th tie group does not lie strictly inside its
// radius grows it, and atoms that outgrow the grid are redone on a grid built for the
// largest radius they need.
void Worker::run(int64_t s) {
  prepare(s);
  bad_atom_ = -1;
  const size_t k = static_cast<size_t>(in_.k);
  atom_radius_.assign(n_, radius0_);
  pending_.resize(n_);
  for (int32_t i = 0; i < n_; ++i) pending_[i] = i;
  double grid_radius = radius0_;
  while (!pending_.empty()) {
    build_grid(grid_radius);
    const double reach = grid_.radius();
    deferred_.clear();
    double need = 0.0;
    for (const int32_t i : pending_) {
      double radius = any_pbc_ ? atom_radius_[i] : reach;
      for (;;) {
        m_ = grid_.query(i, radius, keys_);
        if (!any_pbc_) {  // every atom is a candidate
          rank_head(i);
          finish_atom(i);
          break;
        }
        if (m_ < k) {
          radius *= std::max(1.25, 1.1 * std::cbrt((k + 1.0) / (m_ + 1.0)));
        } else {
          const double last = rank_head(i);
          if (last + in_.tie_tol + 1e-9 * radius < radius) {
            finish_atom(i);
            break;
          }
          radius = std::max(1.25 * radius, last + in_.tie_tol + 0.1 * radius);
        }
        if (radius > reach) {
          atom_radius_[i] = radius;
          deferred_.push_back(i);
          need = std::max(need, radius);
          break;
        }
      }
    }
    pending_.swap(deferred_);
    grid_radius = need;
  }
  if (bad_atom_ >= 0) fail(s_, bad_message_);
}

[[noreturn]] void bad_argument(const std::string& what) { throw KnnError(what); }

}  // namespace

int resolve_threads(int num_threads) {
  if (num_threads < 0)
    bad_argument("num_threads: expected >= 0 (0 = all hardware threads), got " +
                 std::to_string(num_threads));
  if (num_threads > 0) return num_threads;
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void validate_batch(const KnnInput& in) {
  if (in.k < 1 || in.k > MAX_K)
    bad_argument("k: expected 1.." + std::to_string(MAX_K) + ", got " + std::to_string(in.k));
  if (!std::isfinite(in.tie_tol) || in.tie_tol < 0.0)
    bad_argument(fmt("tie_tol: expected a finite value >= 0, got %.6g", in.tie_tol));
  if (!std::isfinite(in.min_distance) || in.min_distance < 0.0)
    bad_argument(fmt("min_distance: expected a finite value >= 0, got %.6g", in.min_distance));
  if (in.n_structures < 0 || in.n_atoms < 0)
    bad_argument("atom_ptr: expected non-negative numbers of structures and atoms");
  if (in.atom_ptr == nullptr) bad_argument("atom_ptr: expected (S + 1,) offsets, got none");
  if (in.atom_ptr[0] != 0)
    bad_argument("atom_ptr: expected atom_ptr[0] == 0, got " + std::to_string(in.atom_ptr[0]));
  for (int64_t s = 0; s < in.n_structures; ++s) {
    const int64_t count = in.atom_ptr[s + 1] - in.atom_ptr[s];
    if (count < 1)
      bad_argument("atom_ptr: expected strictly increasing offsets, structure " +
                   std::to_string(s) + " has " + std::to_string(count) +
                   " atoms (empty or non-monotonic)");
    if (count > std::numeric_limits<int32_t>::max())
      bad_argument("atom_ptr: structure " + std::to_string(s) + " has too many atoms");
  }
  if (in.atom_ptr[in.n_structures] != in.n_atoms)
    bad_argument("atom_ptr: expected atom_ptr[S] == number of atoms " +
                 std::to_string(in.n_atoms) + ", got " +
                 std::to_string(in.atom_ptr[in.n_structures]));
}

void knn_batch(const KnnInput& in, const KnnOutput& out, int num_threads) {
  validate_batch(in);
  const int64_t n_structures = in.n_structures;
  if (n_structures == 0) return;
  const int threads = static_cast<int>(
      std::min<int64_t>(resolve_threads(num_threads), n_structures));
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> first_error{n_structures};
  std::mutex mutex;
  std::exception_ptr error;
  auto work = [&]() {
    Worker worker(in, out);
    for (;;) {
      // Claims are monotonic, so every structure below a recorded error is still processed
      // and the reported error is the one with the lowest index.
      const int64_t s = next.fetch_add(1);
      if (s >= n_structures || s > first_error.load()) return;
      try {
        worker.run(s);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (s < first_error.load()) {
          first_error.store(s);
          error = std::current_exception();
        }
      }
    }
  };
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    for (std::thread& t : pool) t.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace fastgap
