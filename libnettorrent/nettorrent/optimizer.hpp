// Optimizers behind one interface. Each parameter block (a weight matrix, a
// bias vector) has its own optimizer_state, so any slice of a layer can be
// updated, exchanged or averaged independently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nettorrent {

enum class optimizer_kind { sgd, momentum, adagrad, rmsprop, adam };

std::string_view to_string(optimizer_kind k) noexcept;

/// Parses "sgd", "momentum", "adagrad", "rmsprop", "adam".
optimizer_kind parse_optimizer_kind(std::string_view name);

/// Hyper-parameters. Which ones matter depends on `kind`.
struct optimizer_config {
  optimizer_kind kind = optimizer_kind::adam;
  float learning_rate = 1e-3f;
  float momentum = 0.9f; ///< momentum: velocity decay mu
  bool nesterov = false; ///< momentum: Nesterov's look-ahead form
  float beta1 = 0.9f;    ///< adam
  float beta2 = 0.999f;  ///< adam
  float rho = 0.9f;      ///< rmsprop: decay of the squared-gradient average
  float epsilon = 1e-8f; ///< adagrad, rmsprop, adam

  /// Throws nettorrent::error naming the first out-of-range value.
  void validate() const;
};

/// Per-block state. `m` is the first moment / velocity, `v` the second moment
/// / accumulated squares; either is empty when the optimizer has none.
struct optimizer_state {
  std::vector<float> m;
  std::vector<float> v;
  std::uint64_t steps = 0; ///< updates applied to this block
  /// Sync rounds with error feedback (topology.sync_feedback): what the
  /// coded changes of this block have not delivered yet, carried into the
  /// next round's change (empty without). Not the optimizer's: it travels
  /// with the moments, into run checkpoints but not model checkpoints.
  std::vector<float> r;
};

/// The per-element vectors of an optimizer_state, for code that cuts,
/// glues or sizes them alike.
inline constexpr std::vector<float> optimizer_state::*state_vectors[] = {
    &optimizer_state::m, &optimizer_state::v, &optimizer_state::r};

class optimizer {
public:
  virtual ~optimizer() = default;

  /// Creates the state for a block of `n` parameters (moments at zero).
  virtual optimizer_state make_state(std::size_t n) const = 0;

  /// Applies one update to `w` (n values) from gradient `g` (n values).
  /// Allocation-free.
  virtual void step(float* w, const float* g, std::size_t n, optimizer_state& s) const = 0;

  const optimizer_config& config() const noexcept { return cfg_; }

  explicit optimizer(const optimizer_config& cfg) : cfg_(cfg) {}

protected:
  optimizer_config cfg_;
};

/// Validates `cfg` and builds the optimizer it describes.
std::unique_ptr<optimizer> make_optimizer(const optimizer_config& cfg);

} // namespace nettorrent
