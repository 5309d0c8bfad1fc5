#include "nettorrent/outer.hpp"

#include <string>

#include "nettorrent/error.hpp"
#include "nettorrent/slice_ops.hpp"

// Compiled with -ffp-contract=off (libnettorrent/CMakeLists.txt): every
// product and sum below is rounded on its own, as written, so the result is
// the same on every machine whatever FMA units it has.

namespace nettorrent {

namespace {

void step_block(const outer_config& cfg, const float* mean, float* theta, float* v,
                Eigen::Index n) {
  const float eta = cfg.learning_rate;
  const float mu = cfg.momentum;
  for (Eigen::Index k = 0; k < n; ++k) {
    const float delta = theta[k] - mean[k];
    const float vel = mu * v[k] + delta;
    v[k] = vel;
    const float move = cfg.nesterov ? delta - eta * (delta + mu * vel) : delta - eta * vel;
    theta[k] = mean[k] + move;
  }
}

} // namespace

dense_params zero_velocity(const dense_params& theta) {
  dense_params v;
  v.w = matrix::Zero(theta.w.rows(), theta.w.cols());
  v.b = row_vector::Zero(theta.b.size());
  return v;
}

dense_params mean_params(const std::vector<const dense_params*>& ps) {
  if (ps.empty())
    throw error("mean_params: no parameters");
  for (const auto* p : ps)
    if (!same_shape(*ps[0], *p))
      throw error("mean_params: parameters differ in shape");
  dense_params out = *ps[0];
  const float inv = 1.0f / static_cast<float>(ps.size());
  for (std::size_t i = 1; i < ps.size(); ++i) {
    out.w += ps[i]->w;
    out.b += ps[i]->b;
  }
  out.w *= inv;
  out.b *= inv;
  return out;
}

void outer_step(const outer_config& cfg, const dense_params& mean, outer_state& s) {
  if (!same_shape(mean, s.theta) || !same_shape(mean, s.velocity))
    throw error("outer step: the replicas' mean is " + std::to_string(mean.w.rows()) + " x "
                + std::to_string(mean.w.cols()) + ", the outer state "
                + std::to_string(s.theta.w.rows()) + " x " + std::to_string(s.theta.w.cols())
                + " (momentum " + std::to_string(s.velocity.w.rows()) + " x "
                + std::to_string(s.velocity.w.cols()) + ")");
  step_block(cfg, mean.w.data(), s.theta.w.data(), s.velocity.w.data(), mean.w.size());
  step_block(cfg, mean.b.data(), s.theta.b.data(), s.velocity.b.data(), mean.b.size());
}

std::vector<layer_state> outer_exchange(const outer_config& cfg,
                                        const std::vector<const layer_state*>& replicas,
                                        outer_state& s) {
  if (replicas.empty())
    throw error("outer exchange: no replicas");
  std::vector<layer_state> out;
  if (cfg.average_moments) { // the mean of weights and moments, then the outer step
    out.push_back(average_states(replicas));
    outer_step(cfg, out.back().params, s);
    out.back().params = s.theta;
    return out;
  }
  std::vector<const dense_params*> ps;
  for (const auto* r : replicas)
    ps.push_back(&r->params);
  outer_step(cfg, mean_params(ps), s);
  out.reserve(replicas.size());
  for (const auto* r : replicas)
    out.push_back(layer_state{s.theta, r->w_state, r->b_state});
  return out;
}

} // namespace nettorrent
