// C++ tests of the equivalent-row grouping (fastgap_rows.hpp): run by ctest.
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "check.hpp"
#include "fastgap_rows.hpp"

namespace {

using fastgap_test::check;

struct Lists {
  std::vector<int64_t> numbers, lengths, ptr{0};
  std::vector<float> distances;
  int64_t width = 3;
  void structure(const std::vector<std::vector<std::pair<int64_t, float>>>& atoms) {
    for (const auto& list : atoms) {
      for (int64_t t = 0; t < width; ++t) {
        const bool valid = t < int64_t(list.size());
        numbers.push_back(valid ? list[size_t(t)].first : 0);
        distances.push_back(valid ? list[size_t(t)].second : INFINITY);
      }
      lengths.push_back(int64_t(list.size()));
    }
    ptr.push_back(ptr.back() + int64_t(atoms.size()));
  }
  fastgap::RowsInput input(double tol = 1e-4) const {
    fastgap::RowsInput in;
    in.numbers = numbers.data();
    in.distances = distances.data();
    in.lengths = lengths.data();
    in.atom_ptr = ptr.data();
    in.n_atoms = int64_t(lengths.size());
    in.width = width;
    in.n_structures = int64_t(ptr.size()) - 1;
    in.tol = tol;
    return in;
  }
};

void test_groups() {
  Lists l;
  // structure 0: atoms 0 and 2 equal (distances within rounding), 1 differs, 3 shorter
  l.structure({{{8, 0.f}, {1, 1.00001f}, {1, 2.f}},
               {{8, 0.f}, {1, 1.1f}, {1, 2.f}},
               {{8, 0.f}, {1, 1.000012f}, {1, 2.f}},
               {{8, 0.f}, {1, 1.00001f}}});
  l.structure({});  // empty
  // structure 2: the same list as atom 0 above: a group of its own structure
  l.structure({{{8, 0.f}, {1, 1.00001f}, {1, 2.f}}, {{8, 0.f}, {1, 1.00001f}, {1, 2.f}}});
  std::vector<char> rep(l.lengths.size());
  std::vector<int64_t> slot(l.lengths.size());
  fastgap::group_lists(l.input(), reinterpret_cast<bool*>(rep.data()), slot.data());
  check(rep == std::vector<char>{1, 1, 0, 1, 1, 0}, "representatives");
  check(slot == std::vector<int64_t>{0, 1, 0, 2, 0, 0}, "slots");
}

void test_errors() {
  Lists l;
  l.structure({{{8, 0.f}}});
  std::vector<char> rep(1);
  std::vector<int64_t> slot(1);
  auto raises = [&](fastgap::RowsInput in, const std::string& needle) {
    try {
      fastgap::group_lists(in, reinterpret_cast<bool*>(rep.data()), slot.data());
    } catch (const fastgap::RowsError& e) {
      return std::string(e.what()).find(needle) != std::string::npos;
    }
    return false;
  };
  check(raises(l.input(0.0), "tol"), "tol 0");
  std::vector<int64_t> bad_len{4};
  auto in = l.input();
  in.lengths = bad_len.data();
  check(raises(in, "lengths"), "length > L");
  std::vector<int64_t> bad_ptr{0, 2};
  in = l.input();
  in.atom_ptr = bad_ptr.data();
  check(raises(in, "atom_ptr"), "atom_ptr end");
}

}  // namespace

int main() {
  return fastgap_test::run_all({{"groups", test_groups}, {"errors", test_errors}});
}
