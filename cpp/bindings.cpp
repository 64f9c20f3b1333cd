// nanobind glue for fastgap._core: array plumbing only; the contract is in fastgap_knn.hpp.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "fastgap_knn.hpp"
#include "fastgap_lstm.hpp"
#include "fastgap_rows.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

template <typename T>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;

template <typename T, size_t D>
using Out = nb::ndarray<nb::numpy, T, nb::ndim<D>>;

// An uninitialised C++ buffer that becomes the storage of a NumPy array.
template <typename T>
struct Buffer {
  explicit Buffer(size_t n) : data(new T[n == 0 ? 1 : n]) {}
  template <size_t D>
  Out<T, D> to_numpy(std::initializer_list<size_t> shape) {
    T* raw = data.release();
    nb::capsule owner(raw, [](void* p) noexcept { delete[] static_cast<T*>(p); });
    return Out<T, D>(raw, shape, owner);
  }
  std::unique_ptr<T[]> data;
};

// Throws Error naming `name` unless array `a` has shape `want` (-1: any size there).
template <typename Error, typename Array>
void check_shape(const char* name, const Array& a, std::initializer_list<int64_t> want) {
  bool ok = a.ndim() == want.size();
  size_t d = 0;
  for (int64_t w : want) {
    ok = ok && (w < 0 || int64_t(a.shape(d)) == w);
    ++d;
  }
  if (ok) return;
  std::string got = "(", expect = "(";
  for (size_t i = 0; i < a.ndim(); ++i) got += (i ? ", " : "") + std::to_string(a.shape(i));
  d = 0;
  for (int64_t w : want)
    expect += (d++ ? ", " : "") + (w < 0 ? std::string("any") : std::to_string(w));
  throw Error(std::string(name) + ": expected shape " + expect + "), got " + got + ")");
}

nb::tuple knn_batch(In<double> lattices, In<double> frac_coords, In<int32_t> numbers,
                    In<int64_t> atom_ptr, In<bool> pbc, int k, int num_threads,
                    double tie_tol, double min_distance) {
  const int64_t n_structures = atom_ptr.ndim() == 1 ? int64_t(atom_ptr.shape(0)) - 1 : -1;
  const int64_t n_atoms = frac_coords.ndim() == 2 ? int64_t(frac_coords.shape(0)) : -1;
  using fastgap::KnnError;
  check_shape<KnnError>("atom_ptr", atom_ptr, {n_structures + 1});
  check_shape<KnnError>("frac_coords", frac_coords, {n_atoms, 3});
  check_shape<KnnError>("lattices", lattices, {n_structures, 3, 3});
  check_shape<KnnError>("numbers", numbers, {n_atoms});
  check_shape<KnnError>("pbc", pbc, {n_structures, 3});
  if (n_structures < 0) throw fastgap::KnnError("atom_ptr: expected at least one offset");

  fastgap::KnnInput in;
  in.lattices = lattices.data();
  in.frac_coords = frac_coords.data();
  in.numbers = numbers.data();
  in.atom_ptr = atom_ptr.data();
  in.pbc = pbc.data();
  in.n_structures = n_structures;
  in.n_atoms = n_atoms;
  in.k = k;
  in.tie_tol = tie_tol;
  in.min_distance = min_distance;
  fastgap::validate_batch(in);
  fastgap::resolve_threads(num_threads);

  const size_t a = size_t(n_atoms), kk = size_t(k);
  Buffer<int16_t> nbr_numbers(a * kk);
  Buffer<double> distances(a * kk);
  Buffer<int32_t> indices(a * kk);
  Buffer<int32_t> images(a * kk * 3);
  Buffer<int32_t> counts(a);
  fastgap::KnnOutput out{nbr_numbers.data.get(), distances.data.get(), indices.data.get(),
                         images.data.get(), counts.data.get()};
  {
    nb::gil_scoped_release release;
    fastgap::knn_batch(in, out, num_threads);
  }
  return nb::make_tuple(nbr_numbers.to_numpy<2>({a, kk}), distances.to_numpy<2>({a, kk}),
                        indices.to_numpy<2>({a, kk}), images.to_numpy<3>({a, kk, 3}),
                        counts.to_numpy<1>({a}));
}

// Empty `scale` (size 0) means 1 everywhere; the dense inputs are `dense` (R, L, B), or, when
// `dense` is empty, the Gaussians of `distances` (R, L). B is w_dense's second dimension.
Out<float, 2> lstm_final_states(In<int64_t> index, In<float> scale, In<float> dense,
                                In<float> distances, In<float> rbf_centres, float rbf_width,
                                float rbf_zero, In<int64_t> lengths, In<float> table,
                                In<float> w_dense, In<float> w_hh, In<float> bias, bool bf16,
                                int num_threads, const std::string& isa) {
  const int64_t R = index.ndim() == 2 ? int64_t(index.shape(0)) : -1,
                L = index.ndim() == 2 ? int64_t(index.shape(1)) : -1,
                H = w_hh.ndim() == 2 ? int64_t(w_hh.shape(1)) : -1,
                B = w_dense.ndim() == 2 ? int64_t(w_dense.shape(1)) : -1;
  using fastgap::LstmError;
  check_shape<LstmError>("index", index, {-1, -1});
  check_shape<LstmError>("w_hh", w_hh, {4 * H, H});
  check_shape<LstmError>("w_dense", w_dense, {4 * H, -1});
  check_shape<LstmError>("lengths", lengths, {R});
  check_shape<LstmError>("table", table, {-1, 4 * H});
  check_shape<LstmError>("bias", bias, {4 * H});
  if (scale.size() != 0) check_shape<LstmError>("scale", scale, {R, L});
  if (dense.size() != 0) check_shape<LstmError>("dense", dense, {R, L, B});
  if (distances.size() != 0) {
    check_shape<LstmError>("distances", distances, {R, L});
    check_shape<LstmError>("rbf_centres", rbf_centres, {B});
  }
  fastgap::LstmInput in;
  in.index = index.data();
  in.scale = scale.size() ? scale.data() : nullptr;
  in.dense = dense.size() ? dense.data() : nullptr;
  in.distances = distances.size() ? distances.data() : nullptr;
  in.rbf_centres = rbf_centres.size() ? rbf_centres.data() : nullptr;
  in.rbf_width = rbf_width;
  in.rbf_zero = rbf_zero;
  in.lengths = lengths.data();
  in.table = table.data();
  in.w_dense = B > 0 ? w_dense.data() : nullptr;
  in.w_hh = w_hh.data();
  in.bias = bias.data();
  in.rows = R;
  in.steps = L;
  in.dense_dim = B;
  in.table_rows = int64_t(table.shape(0));
  in.hidden = H;
  in.bf16 = bf16;
  in.isa = isa.c_str();
  Buffer<float> out(size_t(R * H));
  {
    nb::gil_scoped_release release;
    fastgap::lstm_final_states(in, out.data.get(), num_threads);
  }
  return out.to_numpy<2>({size_t(R), size_t(H)});
}

nb::tuple group_lists(In<int64_t> numbers, In<float> distances, In<int64_t> lengths,
                      In<int64_t> atom_ptr, double tol) {
  const int64_t A = numbers.ndim() == 2 ? int64_t(numbers.shape(0)) : -1,
                L = numbers.ndim() == 2 ? int64_t(numbers.shape(1)) : -1,
                S = atom_ptr.ndim() == 1 ? int64_t(atom_ptr.shape(0)) - 1 : -1;
  if (A < 0 || S < 0) throw fastgap::RowsError("numbers, atom_ptr: expected (A, L) and (S + 1,)");
  if (distances.ndim() != 2 || int64_t(distances.shape(0)) != A || int64_t(distances.shape(1)) != L)
    throw fastgap::RowsError("distances: expected the shape of numbers");
  if (lengths.ndim() != 1 || int64_t(lengths.shape(0)) != A)
    throw fastgap::RowsError("lengths: expected (A,) with A = " + std::to_string(A));
  fastgap::RowsInput in;
  in.numbers = numbers.data();
  in.distances = distances.data();
  in.lengths = lengths.data();
  in.atom_ptr = atom_ptr.data();
  in.n_atoms = A;
  in.width = L;
  in.n_structures = S;
  in.tol = tol;
  Buffer<bool> is_rep{size_t(A)};
  Buffer<int64_t> slot{size_t(A)};
  {
    nb::gil_scoped_release release;
    fastgap::group_lists(in, is_rep.data.get(), slot.data.get());
  }
  return nb::make_tuple(is_rep.to_numpy<1>({size_t(A)}), slot.to_numpy<1>({size_t(A)}));
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "fastgap compiled core: periodic k-nearest-neighbour lists (cpp/fastgap_knn.hpp) "
            "and LSTM inference (cpp/fastgap_lstm.hpp).";
  // The one place where C++ errors become Python exceptions.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const fastgap::KnnError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const fastgap::LstmError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const fastgap::RowsError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("knn_batch", &knn_batch, "lattices"_a, "frac_coords"_a, "numbers"_a, "atom_ptr"_a,
        "pbc"_a, "k"_a, "num_threads"_a, "tie_tol"_a, "min_distance"_a,
        "k nearest neighbours of every atom of a batch; returns (numbers int16 (A, k), "
        "distances float64 (A, k) in Å, indices int32 (A, k), images int32 (A, k, 3), "
        "counts int32 (A,)). Contract: cpp/fastgap_knn.hpp.");
  m.def("lstm_final_states", &lstm_final_states, "index"_a, "scale"_a, "dense"_a,
        "distances"_a, "rbf_centres"_a, "rbf_width"_a, "rbf_zero"_a, "lengths"_a, "table"_a,
        "w_dense"_a, "w_hh"_a, "bias"_a, "bf16"_a, "num_threads"_a, "isa"_a,
        "final hidden states float32 (R, H) of a one-layer LSTM whose input gates are "
        "scale * table[index] + w_dense @ dense (empty scale = 1; empty dense: the Gaussians "
        "of distances). Contract: cpp/fastgap_lstm.hpp.");
  m.def("group_lists", &group_lists, "numbers"_a, "distances"_a, "lengths"_a, "atom_ptr"_a,
        "tol"_a,
        "group each structure's atoms by identical neighbour lists; returns (is_rep bool (A,), "
        "slot int64 (A,)). Contract: cpp/fastgap_rows.hpp.");
  m.def("lstm_isas", &fastgap::lstm_isas,
        "instruction sets of the LSTM core on this CPU and build, best first");
  m.attr("__version__") = FASTGAP_VERSION;
  m.attr("TIE_TOL") = fastgap::TIE_TOL;
  m.attr("MIN_DISTANCE") = fastgap::MIN_DISTANCE;
  m.attr("MAX_K") = fastgap::MAX_K;
  m.attr("build_info") = FASTGAP_BUILD_INFO;
}
