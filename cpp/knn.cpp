// Implementation of the contract in fastgap_knn.hpp.
//
// Per structure: wrap coordinates along periodic axes, rotate the lattice into a triangular
// frame (a along x, b in the xy plane) and sort atoms by z. Per atom: enumerate every
// (neighbour, image) inside a sphere of radius R exactly, slicing the sphere along z (a
// binary-searched window of the z-sorted atoms per c-offset), then y (b-offsets), then x
// (a-offsets). No image box is enumerated, which keeps skewed cells cheap. R starts from the
// atomic density and grows until the k-th entry's whole tie group lies strictly inside it.
#include "fastgap_knn.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

namespace fastgap {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMaxFrac = 1073741824.0;  // 2**30
// First radius = density estimate * this; tuned on Materials Project structures.
constexpr double kRadiusSafety = 1.12;
constexpr int64_t kMaxRows = MAX_CANDIDATES * 64;

// A (neighbour, image) pair inside the search sphere; the image is in the wrapped frame.
struct Candidate {
  int32_t j;     // neighbour, local index
  int32_t n[3];  // lattice offset in the wrapped frame
};

// Exact distance of one candidate (index c into the candidate buffer); sorted by d.
struct Key {
  double d;
  int32_t c;
};

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

inline bool key_less(const Key& p, const Key& q) { return p.d < q.d; }

// Reusable per-thread state; one structure at a time. Buffers only grow, so the per-atom
// loop allocates nothing once they have reached the batch's largest size.
class Worker {
 public:
  Worker(const KnnInput& in, const KnnOutput& out) : in_(in), out_(out) {}
  void run(int64_t s);

 private:
  void prepare(int64_t s);
  void rotate_and_sort(double det, const double* len);
  void brute_force_candidates(int32_t i);
  void sphere_candidates(int32_t i, double radius);
  Candidate* reserve_row(int64_t count);
  // Sort the candidates' exact distances (keys_) completely up to the end of the k-th
  // entry's tie group; return that group's last distance (the last one when fewer than k
  // candidates exist) and set head_ to the number of entries up to it.
  double rank_head(int32_t i);
  void check_min_distance(int32_t i) const;
  void fill_entries(int32_t i);
  void order_groups(size_t limit);
  void process_atom(int32_t i);
  void write(int32_t i);

  const KnnInput& in_;
  const KnnOutput& out_;
  int64_t s_ = 0;     // structure index
  int64_t base_ = 0;  // first global atom index of the structure
  int32_t n_ = 0;
  bool pbc_[3] = {false, false, false};
  bool any_pbc_ = false;
  double lat_[9] = {};
  double tri_[6] = {};  // ax, bx, by, cx, cy, cz of the triangular frame
  double radius0_ = 0.0;
  std::vector<double> fw_;        // (n, 3) wrapped fractional coordinates
  std::vector<int32_t> shift_;    // (n, 3) floor of the input coordinates (periodic axes)
  std::vector<double> px_, py_, pz_;  // (n,) rotated positions in z-sorted order, pz_ ascending
  std::vector<int32_t> order_;    // z-sorted position -> local atom index
  std::vector<Candidate> cands_;  // [0, m_) are valid
  size_t m_ = 0;
  std::vector<Key> keys_;         // (m_,)
  size_t head_ = 0;
  std::vector<Entry> sel_;        // (head_,) in contract order after order_groups
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
  if (!any_pbc_) return;
  for (int v = 0; v < 3; ++v) {
    if (pbc_[v] && len[v] < in_.min_distance) {
      fail(s, fmt("atom 0 and its own image along lattice vector %.0f are %.6g A apart, "
                  "closer than min_distance = %.6g A", v, len[v], in_.min_distance));
    }
  }
  rotate_and_sort(det, len);
}

// Triangular frame: x along a, y in the (a, b) plane, z completes it with c_z > 0. Atoms
// are stored by ascending z (structure of arrays) for the sphere slicing.
void Worker::rotate_and_sort(double det, const double* len) {
  const double* a = lat_;
  const double* b = lat_ + 3;
  const double* c = lat_ + 6;
  double ex[3] = {a[0] / len[0], a[1] / len[0], a[2] / len[0]};
  double bx = b[0] * ex[0] + b[1] * ex[1] + b[2] * ex[2];
  double bp[3] = {b[0] - bx * ex[0], b[1] - bx * ex[1], b[2] - bx * ex[2]};
  double by = std::sqrt(bp[0] * bp[0] + bp[1] * bp[1] + bp[2] * bp[2]);
  double ey[3] = {bp[0] / by, bp[1] / by, bp[2] / by};
  double cx = c[0] * ex[0] + c[1] * ex[1] + c[2] * ex[2];
  double cy = c[0] * ey[0] + c[1] * ey[1] + c[2] * ey[2];
  double cz = std::fabs(det) / (len[0] * by);
  tri_[0] = len[0];
  tri_[1] = bx;
  tri_[2] = by;
  tri_[3] = cx;
  tri_[4] = cy;
  tri_[5] = cz;
  order_.resize(n_);
  pz_.resize(n_);
  for (int32_t i = 0; i < n_; ++i) {
    order_[i] = i;
    pz_[i] = fw_[3 * i + 2] * cz;
  }
  const std::vector<double>& zraw = pz_;
  std::sort(order_.begin(), order_.end(), [&](int32_t p, int32_t q) {
    return zraw[p] < zraw[q] || (zraw[p] == zraw[q] && p < q);
  });
  px_.resize(n_);
  py_.resize(n_);
  for (int32_t t = 0; t < n_; ++t) {
    const double* f = &fw_[3 * order_[t]];
    px_[t] = f[0] * tri_[0] + f[1] * bx + f[2] * cx;
    py_[t] = f[1] * by + f[2] * cy;
  }
  for (int32_t t = 0; t < n_; ++t) pz_[t] = fw_[3 * order_[t] + 2] * cz;
  double per_atom = std::fabs(det) / n_;
  radius0_ = kRadiusSafety * std::cbrt(3.0 * (in_.k + 1) * per_atom / (4.0 * kPi));
}

// Room for `count` more candidates; returns where they go.
Candidate* Worker::reserve_row(int64_t count) {
  const size_t need = m_ + static_cast<size_t>(count);
  if (need > cands_.size()) cands_.resize(std::max(need, 2 * cands_.size() + 64));
  return cands_.data() + m_;
}

void Worker::brute_force_candidates(int32_t i) {
  m_ = 0;
  Candidate* out = reserve_row(n_);
  for (int32_t j = 0; j < n_; ++j) {
    out[m_] = Candidate{j, {0, 0, 0}};
    m_ += j != i;
  }
}

// floor/ceil without a libm call (the portable x86-64 baseline has no round instruction);
// arguments are bounded by the search radius over a lattice spacing.
inline int64_t fast_floor(double x) {
  int64_t i = static_cast<int64_t>(x);
  return i - (static_cast<double>(i) > x);
}
inline int64_t fast_ceil(double x) {
  int64_t i = static_cast<int64_t>(x);
  return i + (static_cast<double>(i) < x);
}

// Offsets m with |d0 + m * step| <= r (inv_step = 1 / step); on a non-periodic axis only
// m = 0, if allowed.
inline bool offset_range(bool periodic, double d0, double inv_step, double r, int64_t& lo,
                         int64_t& hi) {
  if (!periodic) {
    lo = hi = 0;
    return std::fabs(d0) <= r;
  }
  lo = fast_ceil((-r - d0) * inv_step);
  hi = fast_floor((r - d0) * inv_step);
  return lo <= hi;
}

// Every (neighbour, image) within `radius` of atom i (up to rounding at the surface, which
// the radius test in process_atom absorbs), except the atom itself at image 0. The sphere
// is sliced along z (a window of the z-sorted atoms per c-offset), then y, then x; the
// x-offsets of a row come from the row's half-width, so no point is tested one by one.
void Worker::sphere_candidates(int32_t i, double radius) {
  m_ = 0;
  const double ax = tri_[0], bx = tri_[1], by = tri_[2], cx = tri_[3], cy = tri_[4],
               cz = tri_[5];
  const double r2 = radius * radius;
  const double inv_ax = 1.0 / ax, inv_by = 1.0 / by;
  const double* fi = &fw_[3 * i];
  const double xi = fi[0] * ax + fi[1] * bx + fi[2] * cx;
  const double yi = fi[1] * by + fi[2] * cy;
  const double zi = fi[2] * cz;
  int64_t nc_lo = 0, nc_hi = 0;
  if (pbc_[2]) {
    nc_lo = static_cast<int64_t>(std::ceil((-radius - (pz_.back() - zi)) / cz));
    nc_hi = static_cast<int64_t>(std::floor((radius - (pz_.front() - zi)) / cz));
  }
  int64_t rows = 0;
  for (int64_t nc = nc_lo; nc <= nc_hi; ++nc) {
    const double zc = zi - nc * cz;  // neighbours need z in [zc - r, zc + r]
    const size_t t0 = std::lower_bound(pz_.begin(), pz_.end(), zc - radius) - pz_.begin();
    const size_t t1 = std::upper_bound(pz_.begin(), pz_.end(), zc + radius) - pz_.begin();
    rows += int64_t(t1 - t0) + 1;
    for (size_t t = t0; t < t1; ++t) {
      const double dz = pz_[t] - zc;
      const double rem = r2 - dz * dz;
      if (rem < 0.0) continue;
      const double dy0 = py_[t] - yi + nc * cy;
      int64_t nb_lo, nb_hi;
      if (!offset_range(pbc_[1], dy0, inv_by, std::sqrt(rem), nb_lo, nb_hi)) continue;
      const int32_t j = order_[t];
      rows += nb_hi - nb_lo + 1;
      const double dx00 = px_[t] - xi + nc * cx;
      for (int64_t nb = nb_lo; nb <= nb_hi; ++nb) {
        const double dy = dy0 + nb * by;
        const double rem2 = rem - dy * dy;
        if (rem2 < 0.0) continue;
        const double dx0 = dx00 + nb * bx;
        int64_t na_lo, na_hi;
        if (!offset_range(pbc_[0], dx0, inv_ax, std::sqrt(rem2), na_lo, na_hi)) continue;
        Candidate* out = reserve_row(na_hi - na_lo + 1);
        for (int64_t na = na_lo; na <= na_hi; ++na)
          *out++ = Candidate{j, {int32_t(na), int32_t(nb), int32_t(nc)}};
        const size_t end = out - cands_.data();
        if (j == i && nb == 0 && nc == 0 && na_lo <= 0 && na_hi >= 0) {
          cands_[m_ - na_lo] = cands_[end - 1];  // drop the atom itself
          m_ = end - 1;
        } else {
          m_ = end;
        }
      }
    }
    if (int64_t(m_) > MAX_CANDIDATES || rows > kMaxRows) {
      fail(s_, "neighbour search for atom " + std::to_string(i) + " exceeds MAX_CANDIDATES" +
                   fmt(" (radius %.6g A); the lattice is too thin or the atoms too dense",
                       radius));
    }
  }
}

double Worker::rank_head(int32_t i) {
  const size_t m = m_;
  const size_t k = static_cast<size_t>(in_.k);
  const double tol = in_.tie_tol;
  if (keys_.size() < m) keys_.resize(std::max(m, 2 * keys_.size()));
  Key* keys = keys_.data();
  // Exact distances, in the input frame as the contract states.
  const double* fi = &fw_[3 * i];
  const double* L = lat_;
  for (size_t t = 0; t < m; ++t) {
    const Candidate& c = cands_[t];
    const double* fj = &fw_[3 * c.j];
    const double d0 = fj[0] + c.n[0] - fi[0], d1 = fj[1] + c.n[1] - fi[1],
                 d2 = fj[2] + c.n[2] - fi[2];
    const double x = d0 * L[0] + d1 * L[3] + d2 * L[6];
    const double y = d0 * L[1] + d1 * L[4] + d2 * L[7];
    const double z = d0 * L[2] + d1 * L[5] + d2 * L[8];
    keys[t] = Key{std::sqrt(x * x + y * y + z * z), int32_t(t)};
  }
  if (m <= k) {
    small_sort(keys, keys + m, key_less);
    head_ = m;
    return m == 0 ? 0.0 : keys[m - 1].d;
  }
  // Select the k-th, then sort only the entries that may share its tie group.
  std::nth_element(keys, keys + (k - 1), keys + m, key_less);
  double thr = keys[k - 1].d + 64.0 * tol;
  size_t p = k;  // keys[0, p) hold every distance <= thr
  for (;;) {
    p = std::partition(keys + p, keys + m, [thr](const Key& q) { return q.d <= thr; }) - keys;
    if (p <= kSmallSort) {
      small_sort(keys, keys + p, key_less);
    } else {
      std::sort(keys, keys + p, key_less);
    }
    size_t g = k - 1;
    while (g + 1 < p && keys[g + 1].d - keys[g].d <= tol) ++g;
    // Keys beyond p are > thr, so the group is complete when its end is within tol of thr.
    if (g + 1 < p || p == m || keys[g].d + tol <= thr) {
      head_ = g + 1;
      return keys[g].d;
    }
    thr = keys[g].d + 64.0 * tol;
  }
}

void Worker::check_min_distance(int32_t i) const {
  if (m_ == 0 || !(keys_[0].d < in_.min_distance)) return;
  const Candidate& c = cands_[keys_[0].c];
  int32_t img[3];
  for (int a = 0; a < 3; ++a) img[a] = c.n[a] - shift_[3 * c.j + a] + shift_[3 * i + a];
  std::string who = c.j == i ? "atom " + std::to_string(i) + " and its own image"
                             : "atoms " + std::to_string(i) + " and " + std::to_string(c.j);
  fail(s_, who + " (image (" + std::to_string(img[0]) + ", " + std::to_string(img[1]) +
               ", " + std::to_string(img[2]) + "))" +
               fmt(" are %.6g A apart, closer than min_distance = %.6g A", keys_[0].d,
                   in_.min_distance));
}

void Worker::fill_entries(int32_t i) {
  if (sel_.size() < head_) sel_.resize(std::max(head_, 2 * sel_.size()));
  const int32_t* si = &shift_[3 * i];
  const int32_t* numbers = in_.numbers + base_;
  for (size_t t = 0; t < head_; ++t) {
    const Candidate& c = cands_[keys_[t].c];
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

void Worker::process_atom(int32_t i) {
  const size_t k = static_cast<size_t>(in_.k);
  double radius = radius0_;
  for (;;) {
    if (!any_pbc_) {
      brute_force_candidates(i);
      rank_head(i);
      break;
    }
    sphere_candidates(i, radius);
    if (m_ < k) {
      radius *= std::max(1.25, 1.1 * std::cbrt((k + 1.0) / (m_ + 1.0)));
      continue;
    }
    const double last = rank_head(i);
    // The whole tie group of the k-th entry must lie strictly inside the searched sphere.
    if (last + in_.tie_tol + 1e-9 * radius < radius) break;
    radius = std::max(1.25 * radius, last + in_.tie_tol + 0.1 * radius);
  }
  check_min_distance(i);
  fill_entries(i);
  order_groups(std::min(k, head_));
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

void Worker::run(int64_t s) {
  prepare(s);
  for (int32_t i = 0; i < n_; ++i) process_atom(i);
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
