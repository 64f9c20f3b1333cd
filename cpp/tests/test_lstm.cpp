// C++ tests of the LSTM inference core against a plain double-precision LSTM: run by ctest.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"
#include "fastgap_lstm.hpp"

namespace {

using fastgap_test::check;

// Random inputs and weights of one problem; `run` fills `out` with the core.
struct Problem {
  int64_t rows, steps, dense_dim, table_rows, hidden;
  bool with_scale;
  std::vector<int64_t> index, lengths;
  std::vector<float> scale, dense, table, w_dense, w_hh, bias;

  Problem(int64_t R, int64_t L, int64_t B, int64_t T, int64_t H, bool scaled, unsigned seed)
      : rows(R), steps(L), dense_dim(B), table_rows(T), hidden(H), with_scale(scaled) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::uniform_int_distribution<int64_t> z(0, T - 1), len(1, L);
    for (int64_t i = 0; i < R * L; ++i) {
      index.push_back(z(rng));
      scale.push_back(0.2f + std::fabs(u(rng)));
    }
    for (int64_t r = 0; r < R; ++r) lengths.push_back(r % 3 == 0 ? L : len(rng));
    for (int64_t i = 0; i < R * L * B; ++i) dense.push_back(u(rng));
    for (int64_t i = 0; i < T * 4 * H; ++i) table.push_back(u(rng));
    for (int64_t i = 0; i < 4 * H * B; ++i) w_dense.push_back(0.5f * u(rng));
    for (int64_t i = 0; i < 4 * H * H; ++i) w_hh.push_back(0.5f * u(rng));
    for (int64_t i = 0; i < 4 * H; ++i) bias.push_back(0.5f * u(rng));
  }

  fastgap::LstmInput input(bool bf16) const {
    fastgap::LstmInput in;
    in.index = index.data();
    in.scale = with_scale ? scale.data() : nullptr;
    in.dense = dense_dim ? dense.data() : nullptr;
    in.lengths = lengths.data();
    in.table = table.data();
    in.w_dense = dense_dim ? w_dense.data() : nullptr;
    in.w_hh = w_hh.data();
    in.bias = bias.data();
    in.rows = rows;
    in.steps = steps;
    in.dense_dim = dense_dim;
    in.table_rows = table_rows;
    in.hidden = hidden;
    in.bf16 = bf16;
    return in;
  }

  std::vector<float> run(bool bf16, int threads = 1, const char* isa = nullptr) const {
    std::vector<float> out(size_t(rows * hidden), -99.0f);
    fastgap::LstmInput in = input(bf16);
    in.isa = isa;
    fastgap::lstm_final_states(in, out.data(), threads);
    return out;
  }

  // The contract's equations in double precision, one row at a time.
  std::vector<double> reference() const {
    const int64_t H = hidden, B = dense_dim;
    std::vector<double> out(size_t(rows * H));
    auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> h(size_t(H), 0.0), c(size_t(H), 0.0), z(size_t(4 * H));
      for (int64_t t = 0; t < lengths[size_t(r)]; ++t) {
        const int64_t e = r * steps + t;
        const double s = with_scale ? scale[size_t(e)] : 1.0;
        for (int64_t q = 0; q < 4 * H; ++q) {
          double v = s * table[size_t(index[size_t(e)] * 4 * H + q)] + bias[size_t(q)];
          for (int64_t b = 0; b < B; ++b) v += double(w_dense[size_t(q * B + b)]) * dense[size_t(e * B + b)];
          for (int64_t k = 0; k < H; ++k) v += double(w_hh[size_t(q * H + k)]) * h[size_t(k)];
          z[size_t(q)] = v;
        }
        for (int64_t j = 0; j < H; ++j) {
          const double i = sig(z[size_t(j)]), f = sig(z[size_t(H + j)]),
                       g = std::tanh(z[size_t(2 * H + j)]), o = sig(z[size_t(3 * H + j)]);
          c[size_t(j)] = f * c[size_t(j)] + i * g;
          h[size_t(j)] = o * std::tanh(c[size_t(j)]);
        }
      }
      for (int64_t j = 0; j < H; ++j) out[size_t(r * H + j)] = h[size_t(j)];
    }
    return out;
  }
};

double max_error(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

// Shapes that exercise padded hidden blocks (H not a multiple of any vector width), no
// dense part, odd dense widths (bfloat16 pairs), row counts not a multiple of a block, and
// the fast model's shape.
const int64_t SHAPES[][5] = {
    // rows, steps, dense, table, hidden
    {1, 1, 0, 3, 1}, {7, 5, 3, 4, 5}, {37, 20, 0, 119, 16}, {130, 20, 24, 119, 96},
    {300, 9, 7, 11, 33},
};

// Every instruction set this CPU runs, float32 and bfloat16.
void test_matches_reference() {
  unsigned seed = 1;
  for (const auto& s : SHAPES) {
    for (bool scaled : {false, true}) {
      const Problem p(s[0], s[1], s[2], s[3], s[4], scaled, seed++);
      const auto ref = p.reference();
      for (const std::string& isa : fastgap::lstm_isas()) {
        const std::string what = isa + " R=" + std::to_string(s[0]) + " H=" +
                                 std::to_string(s[4]) + " B=" + std::to_string(s[2]) +
                                 (scaled ? " scaled" : "");
        const double e32 = max_error(p.run(false, 1, isa.c_str()), ref),
                     e16 = max_error(p.run(true, 1, isa.c_str()), ref);
        check(e32 < 2e-5, what + ": float32 max error " + std::to_string(e32));
        check(e16 < 5e-2, what + ": bfloat16 max error " + std::to_string(e16));
        if (s[1] > 1 || s[2] > 0)  // else there are no products to round
          check(e16 > 1e-5, what + ": bfloat16 as close as float32 (not rounded?)");
      }
    }
  }
}

void test_rows_independent_and_threads_agree() {
  const Problem p(300, 20, 24, 119, 96, false, 99);
  for (bool bf16 : {false, true}) {
    const auto all = p.run(bf16, 1), threaded = p.run(bf16, 4);
    check(all == threaded, "threads change the result");
    // the rows 150.. alone: same bits as inside the batch
    Problem tail = p;
    const int64_t first = 150, L = p.steps, B = p.dense_dim, H = p.hidden;
    tail.rows = p.rows - first;
    tail.index.assign(p.index.begin() + first * L, p.index.end());
    tail.scale.assign(p.scale.begin() + first * L, p.scale.end());
    tail.lengths.assign(p.lengths.begin() + first, p.lengths.end());
    tail.dense.assign(p.dense.begin() + first * L * B, p.dense.end());
    const auto alone = tail.run(bf16);
    check(std::memcmp(alone.data(), all.data() + first * H, alone.size() * sizeof(float)) == 0,
          std::string("a row's result depends on the batch") + (bf16 ? " (bf16)" : ""));
  }
}

void test_padding_is_not_read() {
  Problem p(40, 12, 5, 9, 20, true, 7);
  const auto before = p.run(false);
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t t = p.lengths[size_t(r)]; t < p.steps; ++t) {
      const int64_t e = r * p.steps + t;
      p.index[size_t(e)] = -12345;  // out of range: must not be read
      p.scale[size_t(e)] = NAN;
      for (int64_t b = 0; b < p.dense_dim; ++b) p.dense[size_t(e * p.dense_dim + b)] = NAN;
    }
  check(p.run(false) == before, "entries past a row's length change the result");
}

// Gaussian mode: the core computes the dense inputs from distances; the reference reads the
// same Gaussians written out (including ones cut to 0 at rbf_zero).
void test_gaussians_of_distances() {
  Problem p(70, 20, 24, 119, 96, false, 11);
  std::vector<float> distances, centres;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(0.0f, 9.0f);
  for (int64_t b = 0; b < p.dense_dim; ++b) centres.push_back(8.0f * float(b) / 23.0f);
  const float width = 8.0f / 24.0f, zero = 87.0f;
  int cut = 0;
  for (int64_t e = 0; e < p.rows * p.steps; ++e) {
    distances.push_back(d(rng));
    for (int64_t b = 0; b < p.dense_dim; ++b) {
      const float u = (distances.back() - centres[size_t(b)]) / width, a = u * u;
      cut += a >= zero;
      p.dense[size_t(e * p.dense_dim + b)] = a < zero ? std::exp(-a) : 0.0f;
    }
  }
  check(cut > 0, "no Gaussian reaches the cut");
  const auto ref = p.reference();
  for (const std::string& isa : fastgap::lstm_isas()) {
    for (bool bf16 : {false, true}) {
      fastgap::LstmInput in = p.input(bf16);
      in.dense = nullptr;
      in.distances = distances.data();
      in.rbf_centres = centres.data();
      in.rbf_width = width;
      in.rbf_zero = zero;
      in.isa = isa.c_str();
      std::vector<float> out(size_t(p.rows * p.hidden));
      fastgap::lstm_final_states(in, out.data(), 1);
      const double err = max_error(out, ref);
      check(err < (bf16 ? 5e-2 : 2e-5), isa + (bf16 ? " bf16" : " f32") +
                                            ": Gaussian mode max error " + std::to_string(err));
    }
  }
}

bool raises(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
  } catch (const fastgap::LstmError& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  }
  return false;
}

void test_errors() {
  const Problem p(4, 3, 2, 5, 6, false, 3);
  std::vector<float> out(size_t(4 * 6));
  auto with = [&](const std::function<void(fastgap::LstmInput&)>& edit) {
    return [&, edit]() {
      fastgap::LstmInput in = p.input(false);
      edit(in);
      fastgap::lstm_final_states(in, out.data(), 1);
    };
  };
  std::vector<int64_t> bad_len{1, 0, 3, 2}, bad_index = p.index;
  bad_index[size_t(0 * 3 + 0)] = 5;
  check(raises(with([&](auto& in) { in.lengths = bad_len.data(); }), "lengths"), "length 0");
  check(raises(with([&](auto& in) { in.index = bad_index.data(); }), "index"), "index >= T");
  check(raises(with([&](auto& in) { in.hidden = 0; }), "sizes"), "hidden 0");
  check(raises(with([&](auto& in) { in.w_dense = nullptr; }), "dense"), "missing w_dense");
  check(raises(with([&](auto& in) { in.w_hh = nullptr; }), "weights"), "missing w_hh");
  check(raises([&]() { fastgap::lstm_final_states(p.input(false), out.data(), -1); },
               "num_threads"),
        "num_threads < 0");
  check(raises(with([&](auto& in) { in.isa = "sse9"; }), "isa"), "unknown isa");
  std::vector<float> dist(size_t(4 * 3), 1.0f), centres{0.0f, 1.0f};
  check(raises(with([&](auto& in) { in.distances = dist.data(); }), "dense"),
        "dense and distances");
  check(raises(with([&](auto& in) {
          in.dense = nullptr;
          in.distances = dist.data();
        }), "rbf_centres"),
        "distances without centres");
  check(raises(with([&](auto& in) {
          in.dense = nullptr;
          in.distances = dist.data();
          in.rbf_centres = centres.data();
          in.rbf_width = 0.0f;
        }), "rbf_width"),
        "zero width");
}

}  // namespace

int main() {
  const std::vector<std::pair<const char*, std::function<void()>>> tests = {
      {"matches_reference", test_matches_reference},
      {"rows_independent_and_threads_agree", test_rows_independent_and_threads_agree},
      {"padding_is_not_read", test_padding_is_not_read},
      {"gaussians_of_distances", test_gaussians_of_distances},
      {"errors", test_errors},
  };
  std::printf("instruction sets:");
  for (const std::string& isa : fastgap::lstm_isas()) std::printf(" %s", isa.c_str());
  std::printf("\n");
  return fastgap_test::run_all(tests);
}
