#include "nettorrent/optimizer.hpp"

#include <algorithm>
#include <cmath>

#include <Eigen/Core>

#include "nettorrent/error.hpp"

namespace nettorrent {

std::string_view to_string(optimizer_kind k) noexcept {
  switch (k) {
  case optimizer_kind::sgd:
    return "sgd";
  case optimizer_kind::momentum:
    return "momentum";
  case optimizer_kind::adagrad:
    return "adagrad";
  case optimizer_kind::rmsprop:
    return "rmsprop";
  case optimizer_kind::adam:
    return "adam";
  }
  return "?";
}

optimizer_kind parse_optimizer_kind(std::string_view name) {
  for (auto k : {optimizer_kind::sgd, optimizer_kind::momentum, optimizer_kind::adagrad,
                 optimizer_kind::rmsprop, optimizer_kind::adam})
    if (name == to_string(k))
      return k;
  throw error("unknown optimizer \"" + std::string{name}
              + "\" (expected sgd, momentum, adagrad, rmsprop or adam)");
}

namespace {

void require(bool ok, const char* key, float value, const char* range) {
  if (!ok)
    throw error(std::string{"optimizer."} + key + " = " + std::to_string(value)
                + " is out of range: expected " + range);
}

} // namespace

void optimizer_config::validate() const {
  require(std::isfinite(learning_rate) && learning_rate > 0 && learning_rate <= 10, "learning_rate",
          learning_rate, "0 < learning_rate <= 10");
  require(momentum >= 0 && momentum < 1, "momentum", momentum, "0 <= momentum < 1");
  require(beta1 >= 0 && beta1 < 1, "beta1", beta1, "0 <= beta1 < 1");
  require(beta2 >= 0 && beta2 < 1, "beta2", beta2, "0 <= beta2 < 1");
  require(rho >= 0 && rho < 1, "rho", rho, "0 <= rho < 1");
  require(epsilon > 0 && epsilon <= 1, "epsilon", epsilon, "0 < epsilon <= 1");
}

namespace {

using array_map = Eigen::Map<Eigen::ArrayXf>;
using const_array_map = Eigen::Map<const Eigen::ArrayXf>;

auto as_array(float* p, std::size_t n) {
  return array_map(p, static_cast<Eigen::Index>(n));
}
auto as_array(const float* p, std::size_t n) {
  return const_array_map(p, static_cast<Eigen::Index>(n));
}

/// Runs `f(offset, length)` over [0, n) in chunks that keep all of a step's
/// arrays in L1, so multi-statement updates read memory once.
template <class F>
void for_chunks(std::size_t n, F&& f) {
  constexpr std::size_t chunk = 512;
  for (std::size_t i = 0; i < n; i += chunk)
    f(i, std::min(chunk, n - i));
}

/// Plain stochastic gradient descent (Robbins & Monro 1951): w -= lr g.
class sgd final : public optimizer {
public:
  using optimizer::optimizer;
  optimizer_state make_state(std::size_t) const override { return {}; }
  void step(float* w, const float* g, std::size_t n, optimizer_state& s) const override {
    as_array(w, n) -= cfg_.learning_rate * as_array(g, n);
    ++s.steps;
  }
};

/// Momentum (Polyak 1964; in the form of Sutskever et al. 2013):
///   v = mu v + g;  w -= lr v                 (classical)
///   v = mu v + g;  w -= lr (g + mu v)        (Nesterov)
class momentum final : public optimizer {
public:
  using optimizer::optimizer;
  optimizer_state make_state(std::size_t n) const override {
    return {std::vector<float>(n, 0.0f), {}, 0, {}};
  }
  void step(float* w, const float* g, std::size_t n, optimizer_state& s) const override {
    for_chunks(n, [&](std::size_t i, std::size_t len) {
      auto v = as_array(s.m.data() + i, len);
      const auto grad = as_array(g + i, len);
      v = cfg_.momentum * v + grad;
      if (cfg_.nesterov)
        as_array(w + i, len) -= cfg_.learning_rate * (grad + cfg_.momentum * v);
      else
        as_array(w + i, len) -= cfg_.learning_rate * v;
    });
    ++s.steps;
  }
};

/// AdaGrad (Duchi, Hazan, Singer 2011): G += g^2; w -= lr g / (sqrt(G) + eps).
class adagrad final : public optimizer {
public:
  using optimizer::optimizer;
  optimizer_state make_state(std::size_t n) const override {
    return {{}, std::vector<float>(n, 0.0f), 0, {}};
  }
  void step(float* w, const float* g, std::size_t n, optimizer_state& s) const override {
    for_chunks(n, [&](std::size_t i, std::size_t len) {
      auto acc = as_array(s.v.data() + i, len);
      const auto grad = as_array(g + i, len);
      acc += grad.square();
      as_array(w + i, len) -= cfg_.learning_rate * grad / (acc.sqrt() + cfg_.epsilon);
    });
    ++s.steps;
  }
};

/// RMSProp (Tieleman & Hinton 2012, lecture 6.5):
///   E = rho E + (1 - rho) g^2;  w -= lr g / (sqrt(E) + eps).
class rmsprop final : public optimizer {
public:
  using optimizer::optimizer;
  optimizer_state make_state(std::size_t n) const override {
    return {{}, std::vector<float>(n, 0.0f), 0, {}};
  }
  void step(float* w, const float* g, std::size_t n, optimizer_state& s) const override {
    for_chunks(n, [&](std::size_t i, std::size_t len) {
      auto e = as_array(s.v.data() + i, len);
      const auto grad = as_array(g + i, len);
      e = cfg_.rho * e + (1.0f - cfg_.rho) * grad.square();
      as_array(w + i, len) -= cfg_.learning_rate * grad / (e.sqrt() + cfg_.epsilon);
    });
    ++s.steps;
  }
};

/// Adam (Kingma & Ba 2015, Algorithm 1), with bias correction:
///   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
///   w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
class adam final : public optimizer {
public:
  using optimizer::optimizer;
  optimizer_state make_state(std::size_t n) const override {
    return {std::vector<float>(n, 0.0f), std::vector<float>(n, 0.0f), 0, {}};
  }
  void step(float* w, const float* g, std::size_t n, optimizer_state& s) const override {
    ++s.steps;
    const auto t = static_cast<double>(s.steps);
    const auto c1 = static_cast<float>(1.0 / (1.0 - std::pow(double{cfg_.beta1}, t)));
    const auto c2 = static_cast<float>(1.0 / (1.0 - std::pow(double{cfg_.beta2}, t)));
    for_chunks(n, [&](std::size_t i, std::size_t len) {
      auto m = as_array(s.m.data() + i, len);
      auto v = as_array(s.v.data() + i, len);
      const auto grad = as_array(g + i, len);
      m = cfg_.beta1 * m + (1.0f - cfg_.beta1) * grad;
      v = cfg_.beta2 * v + (1.0f - cfg_.beta2) * grad.square();
      as_array(w + i, len) -= cfg_.learning_rate * (m * c1) / ((v * c2).sqrt() + cfg_.epsilon);
    });
  }
};

} // namespace

std::unique_ptr<optimizer> make_optimizer(const optimizer_config& cfg) {
  cfg.validate();
  switch (cfg.kind) {
  case optimizer_kind::sgd:
    return std::make_unique<sgd>(cfg);
  case optimizer_kind::momentum:
    return std::make_unique<momentum>(cfg);
  case optimizer_kind::adagrad:
    return std::make_unique<adagrad>(cfg);
  case optimizer_kind::rmsprop:
    return std::make_unique<rmsprop>(cfg);
  case optimizer_kind::adam:
    return std::make_unique<adam>(cfg);
  }
  throw error("unknown optimizer kind");
}

} // namespace nettorrent
