#include "nettorrent/slice_ops.hpp"

#include "nettorrent/error.hpp"
#include "nettorrent/outer.hpp"

namespace nettorrent {

std::size_t pick_best(const std::vector<replica_score>& scores) {
  if (scores.empty())
    throw error("pick_best: no replicas");
  std::size_t best = 0;
  for (std::size_t r = 1; r < scores.size(); ++r)
    if (scores[r].loss < scores[best].loss)
      best = r;
  return best;
}

replica_score combine_parts(const std::vector<replica_score>& parts) {
  replica_score out;
  for (const auto& p : parts) {
    out.loss_sum += p.loss_sum;
    out.correct += p.correct;
    out.samples += p.samples;
  }
  if (out.samples == 0)
    throw error("combine_parts: no validation sample was scored");
  const auto n = static_cast<double>(out.samples);
  out.loss = out.loss_sum / n;
  out.accuracy = static_cast<double>(out.correct) / n;
  return out;
}

namespace {

void require_same_shape(const layer_state& a, const layer_state& b) {
  if (a.params.w.rows() != b.params.w.rows() || a.params.w.cols() != b.params.w.cols()
      || a.w_state.m.size() != b.w_state.m.size() || a.w_state.v.size() != b.w_state.v.size()
      || a.b_state.m.size() != b.b_state.m.size() || a.b_state.v.size() != b.b_state.v.size())
    throw error("average_states: slice states differ in shape");
}

void mean_into(std::vector<float>& acc, const std::vector<const std::vector<float>*>& xs) {
  for (std::size_t i = 1; i < xs.size(); ++i)
    for (std::size_t j = 0; j < acc.size(); ++j)
      acc[j] += (*xs[i])[j];
  const float inv = 1.0f / static_cast<float>(xs.size());
  for (auto& a : acc)
    a *= inv;
}

} // namespace

layer_state average_states(const std::vector<const layer_state*>& states) {
  if (states.empty())
    throw error("average_states: no states");
  for (const auto* s : states)
    require_same_shape(*states[0], *s);
  layer_state out;
  std::vector<const dense_params*> ps;
  for (const auto* s : states)
    ps.push_back(&s->params);
  out.params = mean_params(ps);
  out.w_state = states[0]->w_state;
  out.b_state = states[0]->b_state;
  auto moments = [&](auto member_state, auto member_vec) {
    std::vector<const std::vector<float>*> xs;
    for (const auto* s : states)
      xs.push_back(&((s->*member_state).*member_vec));
    mean_into((out.*member_state).*member_vec, xs);
  };
  moments(&layer_state::w_state, &optimizer_state::m);
  moments(&layer_state::w_state, &optimizer_state::v);
  moments(&layer_state::b_state, &optimizer_state::m);
  moments(&layer_state::b_state, &optimizer_state::v);
  return out;
}

namespace {

std::vector<float> cut_vec(const std::vector<float>& full, std::size_t rows, std::size_t cols,
                           column_range r) {
  if (full.empty())
    return {};
  std::vector<float> out;
  out.reserve(rows * r.size());
  for (std::size_t i = 0; i < rows; ++i)
    out.insert(out.end(), full.begin() + static_cast<std::ptrdiff_t>(i * cols + r.begin),
               full.begin() + static_cast<std::ptrdiff_t>(i * cols + r.end));
  return out;
}

} // namespace

layer_state cut_slice(const layer_state& full, column_range cols) {
  const auto rows = static_cast<std::size_t>(full.params.w.rows());
  const auto n = static_cast<std::size_t>(full.params.w.cols());
  if (cols.end > n || cols.begin >= cols.end)
    throw error("cut_slice: columns [" + std::to_string(cols.begin) + ", "
                + std::to_string(cols.end) + ") outside a layer of " + std::to_string(n));
  layer_state s;
  const auto c0 = static_cast<Eigen::Index>(cols.begin);
  const auto len = static_cast<Eigen::Index>(cols.size());
  s.params.w = full.params.w.middleCols(c0, len);
  s.params.b = full.params.b.segment(c0, len);
  // W is row-major, so W's optimizer state is too; b's is a plain vector.
  s.w_state.steps = full.w_state.steps;
  s.b_state.steps = full.b_state.steps;
  for (auto vec : state_vectors) {
    s.w_state.*vec = cut_vec(full.w_state.*vec, rows, n, cols);
    s.b_state.*vec = cut_vec(full.b_state.*vec, 1, n, cols);
  }
  return s;
}

layer_state glue_slices(const std::vector<layer_state>& slices) {
  if (slices.empty())
    throw error("glue_slices: no slices");
  const auto rows = slices[0].params.w.rows();
  Eigen::Index n = 0;
  for (const auto& s : slices) {
    if (s.params.w.rows() != rows)
      throw error("glue_slices: slices differ in fan-in");
    n += s.params.w.cols();
  }
  layer_state out;
  out.params.w.resize(rows, n);
  out.params.b.resize(n);
  // Each state vector the first slice has (moments, feedback residual).
  std::vector<std::vector<float> optimizer_state::*> vecs;
  for (auto vec : state_vectors)
    if (!(slices[0].w_state.*vec).empty()) {
      vecs.push_back(vec);
      (out.w_state.*vec).resize(static_cast<std::size_t>(rows * n));
      (out.b_state.*vec).resize(static_cast<std::size_t>(n));
    }
  out.w_state.steps = slices[0].w_state.steps;
  out.b_state.steps = slices[0].b_state.steps;
  Eigen::Index c0 = 0;
  for (const auto& s : slices) {
    const auto len = s.params.w.cols();
    out.params.w.middleCols(c0, len) = s.params.w;
    out.params.b.segment(c0, len) = s.params.b;
    for (auto vec : vecs) {
      for (Eigen::Index i = 0; i < rows; ++i)
        for (Eigen::Index j = 0; j < len; ++j)
          (out.w_state.*vec)[static_cast<std::size_t>(i * n + c0 + j)] =
              (s.w_state.*vec).at(static_cast<std::size_t>(i * len + j));
      for (Eigen::Index j = 0; j < len; ++j)
        (out.b_state.*vec)[static_cast<std::size_t>(c0 + j)] =
            (s.b_state.*vec).at(static_cast<std::size_t>(j));
    }
    c0 += len;
  }
  return out;
}

std::size_t params_bytes(const dense_params& p) {
  return static_cast<std::size_t>(p.w.size() + p.b.size()) * sizeof(float);
}

std::size_t state_bytes(const layer_state& s) {
  auto n = static_cast<std::size_t>(s.params.w.size() + s.params.b.size());
  for (auto vec : state_vectors)
    n += (s.w_state.*vec).size() + (s.b_state.*vec).size();
  return sizeof(float) * n;
}

} // namespace nettorrent
