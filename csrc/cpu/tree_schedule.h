// The message schedule of a tree, as the tree ops receive it, and the input checks they share.
//
// A schedule is handops.Tree.flat_messages(): M = 2 (K - 1) directed messages (src, dst) as a flat
// list, grouped into levels (level_sizes) whose messages depend only on earlier levels.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace handops {

struct TreeSchedule {
  int64_t num_nodes = 0, num_messages = 0;
  std::vector<int64_t> src, dst;
  std::vector<int64_t> reverse;                 // reverse[m]: the message dst[m] -> src[m]
  std::vector<std::vector<int64_t>> incoming;   // incoming[node]: messages into node, ascending
  std::vector<int64_t> level_begin;             // level l is [level_begin[l], level_begin[l + 1])
  std::vector<int64_t> parent;                  // parent[node], -1 for the root (from the upward half)
  int64_t root = 0;
  std::vector<int64_t> parents_first;           // nodes by depth: every parent before its children

  // Validates the schedule; num_nodes < 0 takes it from the schedule.
  static TreeSchedule from_flat(at::IntArrayRef messages, at::IntArrayRef level_sizes, int64_t num_nodes) {
    TORCH_CHECK_VALUE(messages.size() % 2 == 0, "messages must be flat (src, dst) pairs, got ", messages.size(), " integers");
    TreeSchedule s;
    s.num_messages = int64_t(messages.size()) / 2;
    s.num_nodes = s.num_messages / 2 + 1;
    TORCH_CHECK_VALUE(s.num_messages % 2 == 0, "a tree of K nodes has 2 (K - 1) directed messages, got ", s.num_messages);
    TORCH_CHECK_VALUE(num_nodes < 0 || num_nodes == s.num_nodes, "the schedule has ", s.num_messages,
                      " messages, a tree of ", s.num_nodes, " nodes, but the maps have K = ", num_nodes);
    s.incoming.resize(s.num_nodes);
    for (int64_t m = 0; m < s.num_messages; ++m) {
      const int64_t a = messages[2 * m], b = messages[2 * m + 1];
      TORCH_CHECK_VALUE(a >= 0 && a < s.num_nodes && b >= 0 && b < s.num_nodes && a != b, "message ", m, " (", a, ", ", b,
                        ") must join two different nodes in [0, ", s.num_nodes, ")");
      s.src.push_back(a), s.dst.push_back(b);
      s.incoming[b].push_back(m);
    }
    s.reverse.assign(s.num_messages, -1);
    for (int64_t m = 0; m < s.num_messages; ++m)
      for (int64_t k : s.incoming[s.src[m]])
        if (s.src[k] == s.dst[m]) {
          TORCH_CHECK_VALUE(s.reverse[m] == -1, "message (", s.src[m], ", ", s.dst[m], ") appears more than once");
          s.reverse[m] = k;
        }
    std::vector<int64_t> level_of(s.num_messages, -1);
    s.level_begin.push_back(0);
    for (size_t l = 0; l < level_sizes.size(); ++l) {
      TORCH_CHECK_VALUE(level_sizes[l] > 0, "level sizes must be positive, got ", level_sizes);
      for (int64_t m = s.level_begin.back(); m < s.level_begin.back() + level_sizes[l] && m < s.num_messages; ++m)
        level_of[m] = int64_t(l);
      s.level_begin.push_back(s.level_begin.back() + level_sizes[l]);
    }
    TORCH_CHECK_VALUE(s.level_begin.back() == s.num_messages, "level sizes ", level_sizes, " must add up to the ",
                      s.num_messages, " messages");
    for (int64_t m = 0; m < s.num_messages; ++m) {
      TORCH_CHECK_VALUE(s.reverse[m] >= 0, "message (", s.src[m], ", ", s.dst[m], ") has no reverse message");
      for (int64_t k : s.incoming[s.src[m]])
        TORCH_CHECK_VALUE(k == s.reverse[m] || level_of[k] < level_of[m], "message ", m, " (", s.src[m], ", ", s.dst[m],
                          ") needs message ", k, " (", s.src[k], ", ", s.dst[k], ") from an earlier level: the schedule is not a tree's");
    }
    // A schedule that levels like this has no cycle; its first half (upward: child -> parent) names
    // every node's parent once, leaving one root.
    s.parent.assign(s.num_nodes, -1);
    for (int64_t m = 0; m < s.num_messages / 2; ++m) {
      TORCH_CHECK_VALUE(s.parent[s.src[m]] == -1, "node ", s.src[m], " sends two upward messages; the first half of the "
                        "schedule must send one message from each non-root node to its parent");
      s.parent[s.src[m]] = s.dst[m];
    }
    std::vector<int64_t> depth(s.num_nodes, 0);
    int64_t roots = 0;
    for (int64_t node = 0; node < s.num_nodes; ++node) {
      if (s.parent[node] == -1) s.root = node, ++roots;
      for (int64_t up = node; s.parent[up] != -1 && depth[node] <= s.num_nodes; up = s.parent[up]) ++depth[node];
      TORCH_CHECK_VALUE(depth[node] <= s.num_nodes, "the upward messages contain a cycle through node ", node);
    }
    TORCH_CHECK_VALUE(roots == 1, "the upward half of the schedule must leave exactly one root, it leaves ", roots);
    s.parents_first.resize(s.num_nodes);
    for (int64_t node = 0; node < s.num_nodes; ++node) s.parents_first[node] = node;
    std::stable_sort(s.parents_first.begin(), s.parents_first.end(), [&](int64_t a, int64_t b) { return depth[a] < depth[b]; });
    return s;
  }
};

// Every entry of t (float or double, contiguous) finite and >= 0, else a ValueError that names t.
template <typename scalar_t>
void check_non_negative_finite(const at::Tensor& t, const char* op, const char* name) {
  const scalar_t* data = t.data_ptr<scalar_t>();
  const int64_t size = t.numel();
  const scalar_t largest = std::numeric_limits<scalar_t>::max();
  // The common case in one pass the compiler vectorises: a flag as wide as scalar_t, OR-ed; NaN
  // fails both comparisons.
  using flag_t = std::conditional_t<sizeof(scalar_t) == 8, int64_t, int32_t>;
  flag_t invalid = 0;
  for (int64_t i = 0; i < size; ++i) invalid |= ((data[i] >= 0) & (data[i] <= largest)) ? 0 : 1;
  if (!invalid) return;
  bool all_finite = true;
  scalar_t minimum = largest;
  for (int64_t i = 0; i < size; ++i) {
    if (std::isfinite(data[i])) minimum = std::min(minimum, data[i]);
    else all_finite = false;
  }
  TORCH_CHECK_VALUE(all_finite, op, ": ", name, " must be finite, but it holds NaN or Inf entries (shape ", t.sizes(),
                    ", dtype ", t.scalar_type(), ")");
  TORCH_CHECK_VALUE(false, op, ": ", name, " must be non-negative, but its minimum is ", minimum, " (shape ", t.sizes(),
                    ", dtype ", t.scalar_type(), ")");
}

}  // namespace handops
