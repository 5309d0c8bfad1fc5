// Element-wise activations and their derivatives.
#pragma once

#include <string>
#include <string_view>

#include "nettorrent/tensor.hpp"

namespace nettorrent {

enum class activation { identity, relu, tanh, sigmoid };

/// "identity", "relu", "tanh", "sigmoid".
std::string_view to_string(activation a) noexcept;

/// Parses a name; throws nettorrent::error naming the valid choices.
activation parse_activation(std::string_view name);

/// H = act(Z), in place. Z, H: B x n.
void activate(activation a, matrix& z);

/// dZ = dH * act'(Z), in place on `dh`, with act' written in terms of the
/// activation's output H (all four have that form, so Z need not be kept).
/// H, dH: B x n.
void activation_backward(activation a, const matrix& h, matrix& dh);

} // namespace nettorrent
