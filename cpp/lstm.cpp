// LSTM inference core: validation, weight packing, instruction-set choice and threads.
// The contract is in fastgap_lstm.hpp; the kernel in lstm_impl.hpp.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fastgap_knn.hpp"  // resolve_threads
#include "fastgap_lstm.hpp"
#include "lstm_internal.hpp"

namespace fastgap {

namespace portable {
extern const lstm_detail::Variant variant;
}
#ifdef FASTGAP_LSTM_X86
namespace avx2 {
extern const lstm_detail::Variant variant;
}
namespace avx512f {
extern const lstm_detail::Variant variant;
}
namespace avx512 {
extern const lstm_detail::Variant variant;
}
#endif

namespace {

using lstm_detail::Packed;
using lstm_detail::Variant;

[[noreturn]] void bad(const std::string& message) { throw LstmError(message); }

// The variants this CPU runs, best first.
std::vector<const Variant*> available() {
  std::vector<const Variant*> out;
#ifdef FASTGAP_LSTM_X86
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("fma");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) out.push_back(&avx512::variant);
  if (avx512) out.push_back(&avx512f::variant);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back(&avx2::variant);
#endif
  out.push_back(&portable::variant);
  return out;
}

const Variant& choose(const char* isa) {
  const auto variants = available();
  if (isa == nullptr || std::string(isa) == "auto") return *variants.front();
  std::string names;
  for (const Variant* v : variants) {
    if (std::string(isa) == v->name) return *v;
    names += std::string(names.empty() ? "" : ", ") + v->name;
  }
  bad(std::string("isa: '") + isa + "' is not available on this CPU or build (available: " +
      names + ", auto)");
}

// The weight of gate row `row` (0..4H-1) for step input k (dense 0..B-1, then h).
float weight(const LstmInput& in, int64_t row, int64_t k) {
  if (k < in.dense_dim) return in.w_dense[row * in.dense_dim + k];
  k -= in.dense_dim;
  return k < in.hidden ? in.w_hh[row * in.hidden + k] : 0.0f;
}

Packed pack(const LstmInput& in, int vw, bool native_bf16) {
  Packed P;
  const int64_t H = in.hidden, T = in.table_rows;
  P.vw = vw;
  P.nb = int((H + vw - 1) / vw);
  P.hp = int64_t(P.nb) * vw;
  P.k_total = in.dense_dim + P.hp;
  P.k_pairs = (P.k_total + 1) / 2;
  P.bp = (in.dense_dim + vw - 1) / vw * vw;
  P.centres = lstm_detail::Aligned<float>(size_t(P.bp));
  for (int64_t b = 0; b < P.bp; ++b)
    P.centres.get()[b] = in.rbf_centres && b < in.dense_dim ? in.rbf_centres[b] : INFINITY;
  P.native_bf16 = native_bf16;
  P.table = lstm_detail::Aligned<float>(size_t(T * P.nb * 4 * vw));
  P.bias = lstm_detail::Aligned<float>(size_t(P.nb * 4 * vw));
  P.w = lstm_detail::Aligned<float>(native_bf16 ? 0 : size_t(P.nb * P.k_total * 4 * vw));
  P.w_bf16 = lstm_detail::Aligned<uint16_t>(native_bf16 ? size_t(P.nb * P.k_pairs * 4 * vw * 2) : 0);
  const bool emulate = in.bf16 && !native_bf16;
  for (int jb = 0; jb < P.nb; ++jb) {
    for (int g = 0; g < 4; ++g) {
      for (int j = 0; j < vw; ++j) {
        const int64_t unit = int64_t(jb) * vw + j;
        if (unit >= H) continue;  // padded units keep zero weights
        const int64_t row = g * H + unit, lane = (int64_t(jb) * 4 + g) * vw + j;
        P.bias.get()[lane] = in.bias[row];
        for (int64_t z = 0; z < T; ++z)
          P.table.get()[z * P.nb * 4 * vw + lane] = in.table[z * 4 * H + row];
        if (native_bf16) {
          for (int64_t kp = 0; kp < P.k_pairs; ++kp) {
            uint16_t* dst = P.w_bf16.get() + (((int64_t(jb) * P.k_pairs + kp) * 4 + g) * vw + j) * 2;
            dst[0] = lstm_detail::to_bf16(weight(in, row, 2 * kp));
            dst[1] = 2 * kp + 1 < P.k_total ? lstm_detail::to_bf16(weight(in, row, 2 * kp + 1)) : 0;
          }
        } else {
          for (int64_t k = 0; k < P.k_total; ++k) {
            const float w = weight(in, row, k);
            P.w.get()[((int64_t(jb) * P.k_total + k) * 4 + g) * vw + j] =
                emulate ? lstm_detail::bf16_value(w) : w;
          }
        }
      }
    }
  }
  return P;
}

}  // namespace

void validate_lstm(const LstmInput& in) {
  if (in.rows < 0 || in.steps < 1 || in.dense_dim < 0 || in.table_rows < 1 || in.hidden < 1)
    bad("sizes: expected rows >= 0, steps >= 1, dense_dim >= 0, table_rows >= 1, hidden >= 1, "
        "got " + std::to_string(in.rows) + ", " + std::to_string(in.steps) + ", " +
        std::to_string(in.dense_dim) + ", " + std::to_string(in.table_rows) + ", " +
        std::to_string(in.hidden));
  if (!in.table || !in.w_hh || !in.bias) bad("weights: table, w_hh and bias are required");
  if (in.dense_dim > 0 && !in.w_dense) bad("w_dense: required for dense_dim > 0");
  if (in.dense_dim > 0 && !in.dense == !in.distances)
    bad("dense: dense_dim > 0 needs either dense inputs or distances (Gaussians), not both");
  if (in.distances && !in.rbf_centres) bad("rbf_centres: required with distances");
  if (in.distances && !(std::isfinite(in.rbf_width) && in.rbf_width > 0.0f))
    bad("rbf_width: expected a finite width > 0, got " + std::to_string(in.rbf_width));
  if (in.rows > 0 && (!in.index || !in.lengths)) bad("index, lengths: required for rows > 0");
  for (int64_t r = 0; r < in.rows; ++r) {
    const int64_t n = in.lengths[r];
    if (n < 1 || n > in.steps)
      bad("lengths: expected 1.." + std::to_string(in.steps) + ", row " + std::to_string(r) +
          " has " + std::to_string(n));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t z = in.index[r * in.steps + t];
      if (z < 0 || z >= in.table_rows)
        bad("index: expected table rows 0.." + std::to_string(in.table_rows - 1) + ", row " +
            std::to_string(r) + " step " + std::to_string(t) + " has " + std::to_string(z));
    }
  }
}

std::vector<std::string> lstm_isas() {
  std::vector<std::string> names;
  for (const Variant* v : available()) names.push_back(v->name);
  return names;
}

void lstm_final_states(const LstmInput& in, float* out, int num_threads) {
  validate_lstm(in);
  if (num_threads < 0)
    bad("num_threads: expected >= 0 (0 = all hardware threads), got " +
        std::to_string(num_threads));
  int threads = resolve_threads(num_threads);
  if (in.rows == 0) return;
  const Variant& variant = choose(in.isa);
  const bool native_bf16 = in.bf16 && variant.native_bf16;
  const Packed packed = pack(in, variant.vw, native_bf16);
  constexpr int64_t CHUNK = 256;  // rows a thread claims at a time
  const int64_t chunks = (in.rows + CHUNK - 1) / CHUNK;
  threads = int(std::min<int64_t>(threads, chunks));
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1))
      variant.run(packed, in, out, c * CHUNK, std::min(in.rows, (c + 1) * CHUNK));
  };
  if (threads <= 1) {
    work();
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex mutex;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&]() {
      try {
        work();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
    });
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace fastgap
