#include "nettorrent/activation.hpp"

#include "nettorrent/error.hpp"

namespace nettorrent {

std::string_view to_string(activation a) noexcept {
  switch (a) {
  case activation::identity:
    return "identity";
  case activation::relu:
    return "relu";
  case activation::tanh:
    return "tanh";
  case activation::sigmoid:
    return "sigmoid";
  }
  return "?";
}

activation parse_activation(std::string_view name) {
  for (auto a : {activation::identity, activation::relu, activation::tanh, activation::sigmoid})
    if (name == to_string(a))
      return a;
  throw error("unknown activation \"" + std::string{name}
              + "\" (expected relu, tanh, sigmoid or identity)");
}

void activate(activation a, matrix& z) {
  auto arr = z.array();
  switch (a) {
  case activation::identity:
    break;
  case activation::relu:
    arr = arr.max(0.0f);
    break;
  case activation::tanh:
    arr = arr.tanh();
    break;
  case activation::sigmoid:
    arr = (1.0f + (-arr).exp()).inverse();
    break;
  }
}

void activation_backward(activation a, const matrix& h, matrix& dh) {
  auto d = dh.array();
  const auto hv = h.array();
  switch (a) {
  case activation::identity:
    break;
  case activation::relu:
    d = (hv > 0.0f).select(d, 0.0f);
    break;
  case activation::tanh:
    d *= 1.0f - hv.square();
    break;
  case activation::sigmoid:
    d *= hv * (1.0f - hv);
    break;
  }
}

} // namespace nettorrent
