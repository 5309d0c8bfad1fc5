#include "nettorrent/config.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>

#include "config_schema.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/hash.hpp"
#include "nettorrent/ini.hpp"
#include "nettorrent/sync_policy.hpp"

namespace nettorrent {

namespace schema {

// --- typed readers: throw nettorrent::error without location ---------------

void wrong_type(const ini_value& v, const char* expected) {
  throw error(std::string{"expected "} + expected + ", got " + to_string(v.kind)
              + (v.text.empty() ? "" : " \"" + v.text + "\""));
}

std::size_t read_size(const ini_value& v, std::size_t lo, std::size_t hi) {
  if (v.kind != ini_value::type::integer)
    wrong_type(v, "an integer");
  if (v.integer < 0 || static_cast<std::uint64_t>(v.integer) < lo
      || static_cast<std::uint64_t>(v.integer) > hi)
    throw error("value " + std::to_string(v.integer) + " is out of range [" + std::to_string(lo)
                + ", " + std::to_string(hi) + "]");
  return static_cast<std::size_t>(v.integer);
}

double read_real(const ini_value& v, double lo, double hi) {
  if (v.kind != ini_value::type::integer && v.kind != ini_value::type::real)
    wrong_type(v, "a number");
  if (!std::isfinite(v.real) || v.real < lo || v.real > hi) {
    std::ostringstream os;
    os << "value " << v.real << " is out of range [" << lo << ", " << hi << "]";
    throw error(os.str());
  }
  return v.real;
}

std::string read_string(const ini_value& v) {
  if (v.kind != ini_value::type::string && v.kind != ini_value::type::atom)
    wrong_type(v, "a quoted string");
  return v.text;
}

bool read_bool(const ini_value& v) {
  if (v.kind != ini_value::type::boolean)
    wrong_type(v, "true or false");
  return v.boolean;
}

std::vector<std::size_t> read_size_list(const ini_value& v, std::size_t lo, std::size_t hi) {
  return read_list(v, "a list like [784, 256, 10]",
                   [&](const ini_value& x) { return read_size(x, lo, hi); });
}

std::vector<std::string> read_string_list(const ini_value& v) {
  return read_list(v, "a list of quoted strings like [\"a\", \"b\"]", read_string);
}

std::string show_list(const std::vector<std::size_t>& xs) {
  return show_list(xs, [](std::size_t x) { return std::to_string(x); });
}

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

std::string show_list(const std::vector<std::string>& xs) {
  return show_list(xs, quote);
}

std::string sorted_lines(std::vector<std::string> lines) {
  std::sort(lines.begin(), lines.end()); // std::string's < compares bytes as unsigned char
  std::string out;
  for (const auto& l : lines)
    out += l + "\n";
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (std::size_t end = text.find('\n'); end != std::string::npos;
       begin = end + 1, end = text.find('\n', begin))
    out.push_back(text.substr(begin, end - begin));
  if (begin < text.size())
    out.push_back(text.substr(begin));
  return out;
}

std::string origin_of(const ini_document& doc, const std::string& key) {
  for (const auto& e : doc.entries)
    if (e.name() == key)
      return e.origin;
  return doc.path;
}

std::string locate(const ini_document& doc, const std::string& message) {
  std::size_t n = 0;
  while (n < message.size()
         && (std::isalnum(static_cast<unsigned char>(message[n])) != 0 || message[n] == '_'
             || message[n] == '.' || message[n] == '-'))
    ++n;
  return origin_of(doc, message.substr(0, n)) + ": " + message;
}

} // namespace schema

namespace {

using namespace schema;

/// The names of the precisions, by the value both sync_precision and
/// wire_precision give them.
constexpr std::array<std::string_view, 3> precision_names{"f32", "bf16", "int8"};

std::string_view precision_name(std::uint8_t p) noexcept {
  return p < precision_names.size() ? precision_names[p] : precision_names[0];
}

/// A precision's value from its name; `kind` ("sync", "wire") names it in
/// the error.
std::uint8_t read_precision(const ini_value& v, const char* kind) {
  const std::string p = read_string(v);
  for (std::size_t i = 0; i < precision_names.size(); ++i)
    if (p == precision_names[i])
      return static_cast<std::uint8_t>(i);
  throw error("unknown " + std::string{kind} + " precision \"" + p
              + "\" (expected f32, bf16 or int8)");
}

template <class T>
std::string show(const T& x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

// --- the schema --------------------------------------------------------------

using option_spec = option<run_config>;

constexpr std::size_t max_width = 1u << 16;
constexpr std::size_t max_count = std::size_t{1} << 40;

const std::vector<option_spec>& all_options() {
  static const std::vector<option_spec> specs = {
      {"model.layers", "list of integers",
       "layer widths, input first (first = pixels per image, last = classes)",
       [](run_config& c, const ini_value& v) { c.model.layers = read_size_list(v, 1, max_width); },
       [](const run_config& c) { return show_list(c.model.layers); }},
      {"model.activation", "string", "hidden-layer activation: relu, tanh, sigmoid, identity",
       [](run_config& c, const ini_value& v) { c.model.hidden = parse_activation(read_string(v)); },
       [](const run_config& c) { return "\"" + std::string{to_string(c.model.hidden)} + "\""; }},
      {"data.dir", "string",
       "directory with the IDX files (.gz or raw); \"\" = the dataset-fashion-mnist package",
       [](run_config& c, const ini_value& v) { c.data.dir = read_string(v); },
       [](const run_config& c) { return "\"" + c.data.dir + "\""; }},
      {"data.validation_size", "integer", "training samples held out for validation",
       [](run_config& c, const ini_value& v) {
         c.data.validation_size = read_size(v, 1, max_count);
       },
       [](const run_config& c) { return show(c.data.validation_size); }},
      {"data.train_limit", "integer", "use at most this many training samples (0 = all)",
       [](run_config& c, const ini_value& v) { c.data.train_limit = read_size(v, 0, max_count); },
       [](const run_config& c) { return show(c.data.train_limit); }},
      {"data.test_limit", "integer", "evaluate on at most this many test samples (0 = all)",
       [](run_config& c, const ini_value& v) { c.data.test_limit = read_size(v, 0, max_count); },
       [](const run_config& c) { return show(c.data.test_limit); }},
      {"training.batch_size", "integer", "samples per mini-batch",
       [](run_config& c, const ini_value& v) {
         c.training.batch_size = read_size(v, 1, max_width);
       },
       [](const run_config& c) { return show(c.training.batch_size); }},
      {"training.max_epochs", "integer", "stop after this many passes over the training split",
       [](run_config& c, const ini_value& v) { c.training.max_epochs = read_size(v, 1, 100000); },
       [](const run_config& c) { return show(c.training.max_epochs); }},
      {"training.target_accuracy", "number",
       "stop once validation accuracy reaches this (0 = run max_epochs)",
       [](run_config& c, const ini_value& v) { c.training.target_accuracy = read_real(v, 0, 1); },
       [](const run_config& c) { return show(c.training.target_accuracy); }},
      {"training.eval_every", "integer", "samples between validation passes (0 = every epoch)",
       [](run_config& c, const ini_value& v) {
         c.training.eval_every = read_size(v, 0, max_count);
       },
       [](const run_config& c) { return show(c.training.eval_every); }},
      {"training.seed", "integer", "seed of every random source (weights, split, order)",
       [](run_config& c, const ini_value& v) {
         c.training.seed = read_size(v, 0, std::numeric_limits<std::int64_t>::max());
       },
       [](const run_config& c) { return show(c.training.seed); }},
      {"training.keep_best", "boolean",
       "evaluate and save the weights of the best validation pass, not the last ones",
       [](run_config& c, const ini_value& v) { c.training.keep_best = read_bool(v); },
       [](const run_config& c) { return std::string{c.training.keep_best ? "true" : "false"}; }},
      {"training.output_dir", "string",
       "where the checkpoint (model.ckpt) and learning curve (curve.csv) are written",
       [](run_config& c, const ini_value& v) {
         c.training.output_dir = read_string(v);
         if (c.training.output_dir.empty())
           throw error("must not be empty");
       },
       [](const run_config& c) { return "\"" + c.training.output_dir + "\""; }, false},
      {"training.progress_interval", "number",
       "seconds between progress lines inside an epoch (0 = one line per epoch)",
       [](run_config& c, const ini_value& v) {
         c.training.progress_interval = read_real(v, 0, 86400);
       },
       [](const run_config& c) { return show(c.training.progress_interval); }, false},
      {"training.checkpoint_every", "integer",
       "sync rounds (centralised: validation passes) between run checkpoints (run-*.ckpt) in "
       "output_dir; 0 = one at the end of the run only",
       [](run_config& c, const ini_value& v) {
         c.training.checkpoint_every = read_size(v, 0, max_count);
       },
       [](const run_config& c) { return show(c.training.checkpoint_every); }, false},
      {"training.checkpoint_keep", "integer",
       "run checkpoints kept in output_dir (the newest; older ones are deleted once a new one is "
       "written)",
       [](run_config& c, const ini_value& v) {
         c.training.checkpoint_keep = read_size(v, 1, 1000000);
       },
       [](const run_config& c) { return show(c.training.checkpoint_keep); }, false},
      {"topology.replicas", "integer",
       "data-parallel replicas, one data shard each (a --resume may change it)",
       [](run_config& c, const ini_value& v) { c.topology.replicas = read_size(v, 1, 1024); },
       [](const run_config& c) { return show(c.topology.replicas); }},
      {"topology.slices", "integer or list",
       "neuron slices per layer: one number for every layer, or a list with one per layer",
       [](run_config& c, const ini_value& v) {
         if (v.kind == ini_value::type::list)
           c.topology.slices = read_size_list(v, 1, max_width);
         else
           c.topology.slices = {read_size(v, 1, max_width)};
       },
       [](const run_config& c) { return show_list(c.topology.slices); }},
      {"topology.max_in_flight", "integer", "batches a replica keeps in its pipeline at once",
       [](run_config& c, const ini_value& v) { c.topology.max_in_flight = read_size(v, 1, 1024); },
       [](const run_config& c) { return show(c.topology.max_in_flight); }},
      {"topology.sync_every", "integer", "samples per replica between sync rounds",
       [](run_config& c, const ini_value& v) {
         c.topology.sync_every = read_size(v, 1, max_count);
       },
       [](const run_config& c) { return show(c.topology.sync_every); }},
      {"topology.sync_policy", "string", "best, average, none or outer",
       [](run_config& c, const ini_value& v) {
         c.topology.policy = parse_sync_policy(read_string(v));
       },
       [](const run_config& c) { return "\"" + std::string{to_string(c.topology.policy)} + "\""; }},
      {"topology.validation_subset", "integer",
       "validation samples that score a sync round (0 = all): each replica (best, none) or the "
       "synced model, split among the replicas (average, outer)",
       [](run_config& c, const ini_value& v) {
         c.topology.validation_subset = read_size(v, 0, max_count);
       },
       [](const run_config& c) { return show(c.topology.validation_subset); }},
      {"topology.validate_every", "integer",
       "score the replicas every this many sync rounds (and always in the last); 1 = every "
       "round. Above 1 only with sync_policy average, outer or none (best needs a winner each "
       "round)",
       [](run_config& c, const ini_value& v) {
         c.topology.validate_every = read_size(v, 1, max_count);
       },
       [](const run_config& c) { return show(c.topology.validate_every); }, true, false, "1"},
      {"topology.outer_learning_rate", "number",
       "sync_policy outer: step size of the outer optimizer, (0, 10]",
       [](run_config& c, const ini_value& v) {
         c.topology.outer_learning_rate = static_cast<float>(read_real(v, 1e-12, 10));
       },
       [](const run_config& c) { return show(c.topology.outer_learning_rate); }, true, false,
       "0.7"},
      {"topology.outer_momentum", "number",
       "sync_policy outer: momentum of the outer optimizer, [0, 1)",
       [](run_config& c, const ini_value& v) {
         c.topology.outer_momentum = static_cast<float>(read_real(v, 0, 0.999999));
       },
       [](const run_config& c) { return show(c.topology.outer_momentum); }, true, false, "0.9"},
      {"topology.outer_nesterov", "boolean", "sync_policy outer: Nesterov's form of the momentum",
       [](run_config& c, const ini_value& v) { c.topology.outer_nesterov = read_bool(v); },
       [](const run_config& c) {
         return std::string{c.topology.outer_nesterov ? "true" : "false"};
       },
       true, false, "true"},
      {"topology.outer_average_moments", "boolean",
       "sync_policy outer: average the replicas' optimizer moments too (false: each keeps its own)",
       [](run_config& c, const ini_value& v) { c.topology.outer_average_moments = read_bool(v); },
       [](const run_config& c) {
         return std::string{c.topology.outer_average_moments ? "true" : "false"};
       },
       true, false, "false"},
      {"topology.sync_precision", "string",
       "sync_policy average and outer: a round's weights as \"f32\", or as their change since "
       "the last round in \"bf16\" (half the bytes) or \"int8\" (a quarter, with a scale per "
       "row); optimizer moments stay f32",
       [](run_config& c, const ini_value& v) {
         c.topology.sync_coding = static_cast<sync_precision>(read_precision(v, "sync"));
       },
       [](const run_config& c) {
         return "\"" + std::string{to_string(c.topology.sync_coding)} + "\"";
       },
       true, false, "\"f32\""},
      {"topology.round_moments", "boolean",
       "sync_policy outer: every round also reads each replica's optimizer moments, so a "
       "replica rolled back after a lost node goes on bit-identically; false: only rounds that "
       "a run checkpoint or the end state needs read them (a round moves the weights alone), "
       "and a rolled-back replica restarts its optimizer from zero moments",
       [](run_config& c, const ini_value& v) { c.topology.round_moments = read_bool(v); },
       [](const run_config& c) { return std::string{c.topology.round_moments ? "true" : "false"}; },
       true, false, "true"},
      {"topology.sync_feedback", "boolean",
       "sync_policy outer with sync_precision bf16 or int8: error feedback, each replica carries "
       "what its coded changes lost to rounding into the next round's change (the residual "
       "travels with the optimizer moments: run checkpoints, and rollbacks under round_moments)",
       [](run_config& c, const ini_value& v) { c.topology.sync_feedback = read_bool(v); },
       [](const run_config& c) { return std::string{c.topology.sync_feedback ? "true" : "false"}; },
       true, false, "false"},
      {"topology.weight_stashing", "boolean", "use forward-time weights in the backward pass",
       [](run_config& c, const ini_value& v) { c.topology.weight_stashing = read_bool(v); },
       [](const run_config& c) {
         return std::string{c.topology.weight_stashing ? "true" : "false"};
       }},
      {"system.scheduler_threads", "integer", "CAF scheduler threads (0 = one per core)",
       [](run_config& c, const ini_value& v) {
         c.system.scheduler_threads = read_size(v, 0, 1024);
       },
       [](const run_config& c) { return show(c.system.scheduler_threads); }, false},
      {"system.registration_timeout", "number",
       "seconds the coordinator waits for every actor to register",
       [](run_config& c, const ini_value& v) {
         c.system.registration_timeout = read_real(v, 0.001, 86400);
       },
       [](const run_config& c) { return show(c.system.registration_timeout); }, false},
      {"system.metrics", "boolean", "export Prometheus metrics (one exporter per process)",
       [](run_config& c, const ini_value& v) { c.system.metrics = read_bool(v); },
       [](const run_config& c) { return std::string{c.system.metrics ? "true" : "false"}; }, false},
      {"system.metrics_bind", "string", "address the metrics exporter listens on",
       [](run_config& c, const ini_value& v) {
         c.system.metrics_bind = read_string(v);
         if (c.system.metrics_bind.empty())
           throw error("must not be empty");
       },
       [](const run_config& c) { return "\"" + c.system.metrics_bind + "\""; }, false},
      {"system.metrics_port", "integer",
       "port of the embedded run's metrics exporter (cluster nodes use nodes.metrics_ports)",
       [](run_config& c, const ini_value& v) { c.system.metrics_port = read_size(v, 1, 65535); },
       [](const run_config& c) { return show(c.system.metrics_port); }, false},
      {"system.metrics_linger", "number",
       "seconds the metrics exporter stays up after the run ends, for a last scrape",
       [](run_config& c, const ini_value& v) { c.system.metrics_linger = read_real(v, 0, 86400); },
       [](const run_config& c) { return show(c.system.metrics_linger); }, false},
      {"system.wire_precision", "string",
       "cluster runs: activations and gradients between nodes as \"f32\", \"bf16\" (half the "
       "bytes) or \"int8\" (a quarter, with a scale per row); sync-round weights follow "
       "topology.sync_precision; "
       "part of the cluster hash",
       [](run_config& c, const ini_value& v) {
         c.system.wire = static_cast<wire_precision>(read_precision(v, "wire"));
       },
       [](const run_config& c) { return "\"" + std::string{to_string(c.system.wire)} + "\""; },
       false},
      {"system.heartbeat_interval", "number",
       "cluster runs: seconds between BASP heartbeats to every connected node",
       [](run_config& c, const ini_value& v) {
         c.system.heartbeat_interval = read_real(v, 0.01, 3600);
       },
       [](const run_config& c) { return show(c.system.heartbeat_interval); }, false},
      {"system.connection_timeout", "number",
       "cluster runs: seconds of silence after which a peer node counts as lost",
       [](run_config& c, const ini_value& v) {
         c.system.connection_timeout = read_real(v, 0.05, 86400);
       },
       [](const run_config& c) { return show(c.system.connection_timeout); }, false},
      {"system.stall_timeout", "number",
       "seconds without progress after which the coordinator prints what every actor waits "
       "for and rolls the stuck replicas back (the third time without a round between: the run "
       "ends)",
       [](run_config& c, const ini_value& v) { c.system.stall_timeout = read_real(v, 1, 86400); },
       [](const run_config& c) { return show(c.system.stall_timeout); }, false},
      {"optimizer.kind", "string", "sgd, momentum, adagrad, rmsprop or adam",
       [](run_config& c, const ini_value& v) {
         c.optimizer.kind = parse_optimizer_kind(read_string(v));
       },
       [](const run_config& c) { return "\"" + std::string{to_string(c.optimizer.kind)} + "\""; }},
      {"optimizer.learning_rate", "number", "step size (0, 10]",
       [](run_config& c, const ini_value& v) {
         c.optimizer.learning_rate = static_cast<float>(read_real(v, 1e-12, 10));
       },
       [](const run_config& c) { return show(c.optimizer.learning_rate); }},
      {"optimizer.momentum", "number", "momentum: velocity decay in [0, 1)",
       [](run_config& c, const ini_value& v) {
         c.optimizer.momentum = static_cast<float>(read_real(v, 0, 0.999999));
       },
       [](const run_config& c) { return show(c.optimizer.momentum); }},
      {"optimizer.nesterov", "boolean", "momentum: use Nesterov's form",
       [](run_config& c, const ini_value& v) { c.optimizer.nesterov = read_bool(v); },
       [](const run_config& c) { return std::string{c.optimizer.nesterov ? "true" : "false"}; }},
      {"optimizer.beta1", "number", "adam: first-moment decay in [0, 1)",
       [](run_config& c, const ini_value& v) {
         c.optimizer.beta1 = static_cast<float>(read_real(v, 0, 0.999999));
       },
       [](const run_config& c) { return show(c.optimizer.beta1); }},
      {"optimizer.beta2", "number", "adam: second-moment decay in [0, 1)",
       [](run_config& c, const ini_value& v) {
         c.optimizer.beta2 = static_cast<float>(read_real(v, 0, 0.9999999));
       },
       [](const run_config& c) { return show(c.optimizer.beta2); }},
      {"optimizer.rho", "number", "rmsprop: squared-gradient decay in [0, 1)",
       [](run_config& c, const ini_value& v) {
         c.optimizer.rho = static_cast<float>(read_real(v, 0, 0.999999));
       },
       [](const run_config& c) { return show(c.optimizer.rho); }},
      {"optimizer.epsilon", "number", "adagrad, rmsprop, adam: denominator guard (0, 1]",
       [](run_config& c, const ini_value& v) {
         c.optimizer.epsilon = static_cast<float>(read_real(v, 1e-30, 1));
       },
       [](const run_config& c) { return show(c.optimizer.epsilon); }},
  };
  return specs;
}

const option_spec* find_spec(const std::string& name) {
  return find_option(all_options(), name);
}

} // namespace

namespace schema {

const std::vector<option<run_config>>& run_options() {
  return all_options();
}

} // namespace schema

void run_config::validate() const {
  if (model.layers.size() < 2)
    throw error("model.layers: needs at least two widths (input and output), got "
                + std::to_string(model.layers.size()));
  if (model.layers.back() < 2)
    throw error("model.layers: the last width is the number of classes and must be >= 2");
  if (model.layers.back() > 256)
    throw error("model.layers: at most 256 classes are supported (labels are bytes)");
  optimizer.validate();
  const sync_policy_def& policy = policy_def(topology.policy);
  if (topology.validate_every > 1 && policy.picks_best && topology.replicas > 1)
    throw error("topology.validate_every = " + std::to_string(topology.validate_every)
                + " needs sync_policy "
                + policy_names([](const sync_policy_def& d) { return !d.picks_best; }) + ": \""
                + std::string{policy.name}
                + "\" scores every replica in every round to pick the winner");
  if (topology.sync_coding != sync_precision::f32 && !policy.scores_synced_model)
    throw error("topology.sync_precision = \"" + std::string{to_string(topology.sync_coding)}
                + "\" needs sync_policy "
                + policy_names([](const sync_policy_def& d) { return d.scores_synced_model; })
                + ": \"" + std::string{policy.name}
                + "\" sends replicas' weights as they are, not as a change from a shared round");
  if (!topology.round_moments && (!policy.keeps_inner_state || topology.outer_average_moments))
    throw error("topology.round_moments = false needs sync_policy \"outer\" with "
                "topology.outer_average_moments = false, where a round leaves each replica's "
                "optimizer moments as they are; \""
                + std::string{policy.name}
                + (policy.keeps_inner_state ? "\" with averaged moments" : "\"")
                + " sets them in every round");
  if (topology.sync_feedback
      && (topology.sync_coding == sync_precision::f32 || !policy.keeps_inner_state
          || topology.outer_average_moments))
    throw error(std::string{"topology.sync_feedback = true needs "}
                + (topology.sync_coding == sync_precision::f32
                       ? "topology.sync_precision \"bf16\" or \"int8\": f32 rounds lose nothing "
                         "to carry"
                       : "sync_policy \"outer\" with topology.outer_average_moments = false, "
                         "where each replica keeps its own residual; \""
                             + std::string{policy.name}
                             + (policy.keeps_inner_state ? "\" with averaged moments" : "\"")
                             + " does not"));
  if (policy.scores_synced_model && topology.replicas > 1) {
    // The synced model is scored in one part of the subset per replica.
    const std::size_t scored =
        validation_subset_size(data.validation_size, topology.validation_subset);
    if (scored < topology.replicas)
      throw error("sync_policy \"" + std::string{to_string(topology.policy)}
                  + "\" scores the synced model on " + std::to_string(scored)
                  + " validation samples (topology.validation_subset, data.validation_size), "
                    "fewer than its "
                  + std::to_string(topology.replicas)
                  + " replicas (topology.replicas): each replica scores a part");
  }
  const std::size_t n_layers = model.layers.size() - 1;
  if (topology.slices.empty())
    throw error("topology.slices: needs at least one value");
  if (topology.slices.size() != 1 && topology.slices.size() != n_layers)
    throw error("topology.slices: has " + std::to_string(topology.slices.size())
                + " values, the model has " + std::to_string(n_layers)
                + " layers (give one value for all, or one per layer)");
  for (std::size_t l = 0; l < n_layers; ++l)
    if (topology.slices_of(l) > model.layers[l + 1])
      throw error("topology.slices: layer " + std::to_string(l + 1) + " has "
                  + std::to_string(model.layers[l + 1]) + " neurons, fewer than its "
                  + std::to_string(topology.slices_of(l)) + " slices");
  if (data.train_limit != 0 && topology.replicas > data.train_limit)
    throw error("topology.replicas = " + std::to_string(topology.replicas) + " is more than the "
                + std::to_string(data.train_limit)
                + " training samples of data.train_limit (every replica needs a shard)");
  if (system.connection_timeout <= system.heartbeat_interval)
    throw error("system.connection_timeout = " + show(system.connection_timeout)
                + " must be longer than system.heartbeat_interval = "
                + show(system.heartbeat_interval));
  if (topology.sync_every < training.batch_size)
    throw error("topology.sync_every = " + std::to_string(topology.sync_every)
                + " is smaller than training.batch_size = " + std::to_string(training.batch_size));
}

std::string_view to_string(sync_precision p) noexcept {
  return precision_name(static_cast<std::uint8_t>(p));
}

std::string_view to_string(wire_precision p) noexcept {
  return precision_name(static_cast<std::uint8_t>(p));
}

std::string run_config::canonical() const {
  std::vector<std::string> lines;
  for (const auto& s : all_options()) {
    if (!s.affects_result)
      continue;
    const std::string value = s.get(*this);
    if (s.unhashed_default == nullptr || value != s.unhashed_default)
      lines.push_back(std::string{s.name} + "=" + value);
  }
  return sorted_lines(std::move(lines));
}

std::uint64_t run_config::hash() const {
  return fnv1a64(canonical());
}

namespace {

/// Parses one `--section.key=value` argument into an entry.
ini_entry parse_override(const std::string& arg) {
  const auto eq = arg.find('=');
  const auto dot = arg.find('.');
  if (arg.rfind("--", 0) != 0 || eq == std::string::npos || dot == std::string::npos || dot > eq)
    throw error("command line: unexpected argument \"" + arg
                + "\" (expected --config-file=PATH or --section.key=value)");
  ini_entry e;
  e.section = arg.substr(2, dot - 2);
  e.key = arg.substr(dot + 1, eq - dot - 1);
  e.origin = "command line";
  const std::string text = arg.substr(eq + 1);
  const option_spec* spec = find_spec(e.name());
  const bool string_key = spec != nullptr && std::string{spec->type} == "string";
  try {
    e.value = parse_ini_value(text);
  } catch (const error&) {
    // Let plain words stand for strings on the command line: --optimizer.kind=sgd
    e.value.kind = ini_value::type::string;
    e.value.text = text;
  }
  if (string_key && e.value.kind != ini_value::type::string
      && e.value.kind != ini_value::type::atom) {
    // --data.dir=2024: a string key takes the text as written.
    e.value = ini_value{};
    e.value.text = text;
  }
  return e;
}

} // namespace

void apply_overrides(const std::vector<std::string>& args, run_config& cfg) {
  for (const auto& arg : args)
    apply_entry(parse_override(arg), cfg, all_options());
}

namespace {

/// If `arg` is `--NAME=VALUE` (or a malformed `--NAME...`), stores VALUE in
/// `value` and returns true; throws for a repeated flag or a missing value.
bool take_path_flag(const std::string& arg, const std::string& flag, std::string& value,
                    bool& seen) {
  if (arg.compare(0, flag.size(), flag) != 0
      || (arg.size() > flag.size() && arg[flag.size()] != '='))
    return false;
  if (seen)
    throw error("command line: " + flag + " given twice (\"" + value + "\" and \"" + arg + "\")");
  if (arg.size() <= flag.size() + 1)
    throw error("command line: \"" + arg + "\" needs a path: write " + flag + "=PATH");
  value = arg.substr(flag.size() + 1);
  seen = true;
  return true;
}

} // namespace

command_line split_command_line(const std::vector<std::string>& args) {
  command_line out;
  bool config_seen = false;
  bool resume_seen = false;
  for (const auto& arg : args)
    if (!take_path_flag(arg, "--config-file", out.config_file, config_seen)
        && !take_path_flag(arg, "--resume", out.resume, resume_seen))
      out.rest.push_back(arg);
  return out;
}

run_config load_run_config(const std::vector<std::string>& args) {
  const command_line cl = split_command_line(args);
  if (!cl.resume.empty())
    throw error("command line: --resume=" + cl.resume + " is not accepted by this command");
  return load_run_config_from(cl);
}

run_config load_run_config_from(const command_line& cl) {
  run_config cfg;
  const std::string& file = cl.config_file;
  std::vector<ini_entry> overrides;
  for (const auto& arg : cl.rest)
    overrides.push_back(parse_override(arg));
  if (!file.empty()) {
    const ini_document doc = parse_ini_file(file);
    for (const auto& e : doc.entries)
      apply_entry(e, cfg, all_options());
  }
  for (const auto& e : overrides)
    apply_entry(e, cfg, all_options());
  try {
    cfg.validate();
  } catch (const error& ex) {
    throw error((file.empty() ? std::string{"configuration"} : file) + ": " + ex.what());
  }
  return cfg;
}

std::string describe_config_keys() {
  return describe(all_options(), run_config{});
}

} // namespace nettorrent
