// The C++ tests' harness (no framework): a failure counter, `check`, and a runner.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace fastgap_test {

inline int g_failures = 0;

inline void check(bool ok, const std::string& what) {
  if (!ok) {
    ++g_failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// Run every named test, print ok / FAIL per test; the process exit code.
inline int run_all(const std::vector<std::pair<const char*, std::function<void()>>>& tests) {
  for (const auto& [name, fn] : tests) {
    const int before = g_failures;
    fn();
    std::printf("%s %s\n", g_failures == before ? "ok  " : "FAIL", name);
  }
  std::printf("%d failure(s)\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace fastgap_test
