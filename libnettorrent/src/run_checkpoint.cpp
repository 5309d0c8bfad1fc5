#include "nettorrent/run_checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "checkpoint_format.hpp"
#include "config_schema.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/hash.hpp"

// The run-state payload, after the model section (see checkpoint_format.hpp),
// as a Cereal portable-binary archive:
//   u64 config_hash, string config_text, u8 actor_run,
//   u64 round, u64 samples, u64 epoch, f64 elapsed_seconds,
//   u64 n, n curve points (u64 epoch, u64 samples, f64 seconds, f64 train_loss,
//     f64 validation_loss, f64 validation_accuracy),
//   f64 loss_sum, u64 loss_samples, f64 best_validation_accuracy,
//   u8 reached_target, f64 time_to_target,
//   u8 has_best, [has_best: best layers], u64 best_samples, u64 best_epoch,
//     4 x u64 best_rng,
//   u64 m (models: 1 = shared by every replica), the layers of models 1..m-1
//     (model 0 is the model section's),
//   u64 r (replicas), r data positions (u64 epoch, cursor, samples,
//     next_batch, 4 x u64 rng),
//   only when the sync policy keeps a state (outer: its momentum), either
//     u8 1, then per layer one W and b (shapes as the layer's), when every
//     layer's state is one such pair (the outer momentum), or
//     u8 2, then per layer u64 k and k pairs of W and b.
//   only when the replica count changed (an elastic resume): u8 3, u64
//     retired_samples, u64 deal epoch, u64 c changes, each u64 from and
//     `from` x u64 cursors.
//   only when rounds carry error feedback (topology.sync_feedback): u8 4,
//     then per model (0..m-1) and layer the residuals of W and b (each a
//     float list, empty or of the block's size).
// Layers are written as in the model section (W, b, optimizer state of W and
// b), their shapes given by the model section's widths.

namespace nettorrent {

using namespace checkpoint_format;

namespace {

constexpr std::size_t curve_point_bytes = 6 * 8;
constexpr std::size_t position_bytes = 8 * 8;

std::string encode_run_state(const run_state& s) {
  std::ostringstream os{std::ios::binary};
  {
    cereal::PortableBinaryOutputArchive ar{os};
    ar(s.config_hash, s.config_text, static_cast<std::uint8_t>(s.actor_run), s.round, s.samples,
       s.epoch, s.elapsed_seconds);
    ar(static_cast<std::uint64_t>(s.curve.size()));
    for (const auto& p : s.curve)
      ar(static_cast<std::uint64_t>(p.epoch), p.samples, p.seconds, p.train_loss, p.validation_loss,
         p.validation_accuracy);
    ar(s.loss_sum, s.loss_samples, s.best_validation_accuracy,
       static_cast<std::uint8_t>(s.reached_target), s.time_to_target);
    ar(static_cast<std::uint8_t>(!s.best_layers.empty()));
    save_layers(ar, s.best_layers);
    ar(s.best_samples, s.best_epoch, s.best_rng);
    ar(static_cast<std::uint64_t>(s.models.size()));
    for (std::size_t m = 1; m < s.models.size(); ++m)
      save_layers(ar, s.models[m]);
    ar(static_cast<std::uint64_t>(s.positions.size()));
    for (const auto& p : s.positions)
      ar(p.epoch, p.cursor, p.samples, p.next_batch, p.rng_state);
    // Absent for the other policies, so their files are what they were.
    if (!s.policy_states.empty()) {
      bool one_each = true;
      for (const auto& st : s.policy_states)
        one_each = one_each && st.parts.size() == 1;
      ar(static_cast<std::uint8_t>(one_each ? 1 : 2));
      for (const auto& st : s.policy_states) {
        if (!one_each)
          ar(static_cast<std::uint64_t>(st.parts.size()));
        for (const auto& v : st.parts) {
          save_matrix(ar, v.w);
          save_matrix(ar, v.b);
        }
      }
    }
    // Absent unless the replica count changed.
    if (!s.deal.empty() || s.retired_samples != 0) {
      ar(std::uint8_t{3}, s.retired_samples, s.deal.epoch,
         static_cast<std::uint64_t>(s.deal.changes.size()));
      for (const auto& c : s.deal.changes) {
        ar(static_cast<std::uint64_t>(c.from));
        for (auto x : c.cursors)
          ar(x);
      }
    }
    // Absent unless the rounds carry error feedback (topology.sync_feedback).
    bool owed = false;
    for (const auto& m : s.models)
      for (const auto& l : m)
        owed = owed || !l.w_state.r.empty() || !l.b_state.r.empty();
    if (owed) {
      ar(std::uint8_t{4});
      for (const auto& m : s.models)
        for (const auto& l : m)
          ar(l.w_state.r, l.b_state.r);
    }
  }
  return os.str();
}

template <class Archive>
bool load_flag(Archive& ar, const char* what) {
  std::uint8_t v = 0;
  ar(v);
  if (v > 1)
    throw error(std::string{what} + " flag holds " + std::to_string(v));
  return v == 1;
}

template <class Archive>
void load_policy_states(Archive& ar, run_state& s, std::uint8_t form, std::size_t size) {
  const std::uint64_t max_elems = size / sizeof(float) + 1;
  s.policy_states.resize(s.models[0].size());
  for (std::size_t i = 0; i < s.policy_states.size(); ++i) {
    auto& st = s.policy_states[i];
    st.parts.resize(form == 1 ? 1 : load_count(ar, size, 2 * 16, "policy state parts"));
    for (auto& v : st.parts) {
      load_matrix(ar, v.w, max_elems);
      load_matrix(ar, v.b, max_elems);
    }
    const auto& w = s.models[0][i].params.w;
    if (form == 1 && !same_shape(st.parts[0], s.models[0][i].params))
      throw error("the sync policy state of layer " + std::to_string(i) + " has shape "
                  + std::to_string(st.parts[0].w.rows()) + " x "
                  + std::to_string(st.parts[0].w.cols()) + ", the layer is "
                  + std::to_string(w.rows()) + " x " + std::to_string(w.cols()));
  }
}

template <class Archive>
void load_deal(Archive& ar, run_state& s, std::size_t size) {
  ar(s.retired_samples, s.deal.epoch);
  s.deal.changes.resize(load_count(ar, size, 8, "replica changes"));
  for (auto& c : s.deal.changes) {
    std::uint64_t from = 0;
    ar(from);
    if (from == 0 || from > size / 8)
      throw error("a replica change from " + std::to_string(from) + " replicas");
    c.from = static_cast<std::uint32_t>(from);
    c.cursors.resize(c.from);
    for (auto& x : c.cursors)
      ar(x);
  }
  if (!s.deal.changes.empty() && s.deal.epoch == 0)
    throw error("a replica change in epoch 0");
}

template <class Archive>
void load_residuals(Archive& ar, run_state& s, std::size_t size) {
  for (std::size_t m = 0; m < s.models.size(); ++m)
    for (std::size_t i = 0; i < s.models[m].size(); ++i) {
      auto& l = s.models[m][i];
      load_vector(ar, l.w_state.r, size);
      load_vector(ar, l.b_state.r, size);
      if ((!l.w_state.r.empty() && l.w_state.r.size() != static_cast<std::size_t>(l.params.w.size()))
          || (!l.b_state.r.empty()
              && l.b_state.r.size() != static_cast<std::size_t>(l.params.b.size())))
        throw error("model " + std::to_string(m) + ", layer " + std::to_string(i)
                    + ": a sync feedback residual of the wrong size");
    }
}

// Reads what encode_run_state wrote; model 0 comes from `model`.
void decode_run_state(const std::string& payload, const model_checkpoint& model, run_state& s) {
  std::istringstream is{payload, std::ios::binary};
  cereal::PortableBinaryInputArchive ar{is};
  const std::size_t size = payload.size();
  const std::vector<std::uint64_t>& widths = model.header.layers;
  ar(s.config_hash);
  load_string(ar, s.config_text, size);
  if (fnv1a64(s.config_text) != s.config_hash)
    throw error("the configuration text does not hash to the stored config hash");
  if (s.config_hash != model.header.config_hash)
    throw error("run state of config " + hash_hex(s.config_hash) + ", model section of config "
                + hash_hex(model.header.config_hash));
  s.actor_run = load_flag(ar, "actor-run");
  ar(s.round, s.samples, s.epoch, s.elapsed_seconds);
  s.curve.resize(load_count(ar, size, curve_point_bytes, "curve points"));
  for (auto& p : s.curve) {
    std::uint64_t epoch = 0;
    ar(epoch, p.samples, p.seconds, p.train_loss, p.validation_loss, p.validation_accuracy);
    p.epoch = static_cast<std::size_t>(epoch);
  }
  ar(s.loss_sum, s.loss_samples, s.best_validation_accuracy);
  s.reached_target = load_flag(ar, "reached-target");
  ar(s.time_to_target);
  if (load_flag(ar, "best-pass"))
    load_layers(ar, s.best_layers, widths, size);
  ar(s.best_samples, s.best_epoch, s.best_rng);
  const std::uint64_t models = load_count(ar, size, 1, "models");
  if (models == 0)
    throw error("no model");
  s.models.resize(models);
  s.models[0] = model.layers;
  for (std::size_t m = 1; m < s.models.size(); ++m)
    load_layers(ar, s.models[m], widths, size);
  s.positions.resize(load_count(ar, size, position_bytes, "data positions"));
  for (auto& p : s.positions)
    ar(p.epoch, p.cursor, p.samples, p.next_batch, p.rng_state);
  if (s.positions.empty())
    throw error("no data position");
  if (s.models.size() != 1 && s.models.size() != s.positions.size())
    throw error(std::to_string(s.models.size()) + " models for "
                + std::to_string(s.positions.size())
                + " replicas (want one shared model or one per replica)");
  std::uint8_t form = 0;
  const auto next_form = [&] {
    form = 0;
    if (is.peek() != std::char_traits<char>::eof())
      ar(form);
    return form;
  };
  if (next_form() == 1 || form == 2) {
    load_policy_states(ar, s, form, size);
    next_form();
  }
  if (form == 3) {
    load_deal(ar, s, size);
    next_form();
  }
  if (form == 4) {
    load_residuals(ar, s, size);
    next_form();
  }
  if (form != 0)
    throw error("unexpected bytes after the data positions (section form "
                + std::to_string(form)
                + "; 1 or 2: sync policy state, 3: replica change, 4: feedback residuals)");
}
// The run checkpoints in `dir` by round, highest first.
std::vector<std::pair<std::uint64_t, std::filesystem::path>>
run_checkpoints_in(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::uint64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string head = "run-";
    const std::string tail = ".ckpt";
    if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0
        || name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
      continue;
    const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
    if (digits.size() > 19
        || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    if (!e.is_regular_file(ec))
      continue;
    out.emplace_back(std::stoull(digits), e.path());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

// `section.key` -> value of each line of a canonical text.
std::map<std::string, std::string> canonical_map(const std::string& text) {
  std::map<std::string, std::string> out;
  for (const auto& line : schema::split_lines(text)) {
    const auto eq = line.find('=');
    out[line.substr(0, eq)] = eq == std::string::npos ? "" : line.substr(eq + 1);
  }
  return out;
}

} // namespace

run_state initial_run_state(const run_config& cfg, std::size_t replicas) {
  run_state s;
  s.config_text = cfg.canonical();
  s.config_hash = fnv1a64(s.config_text);
  s.positions.resize(replicas);
  return s;
}

void save_run_checkpoint(const std::string& path, const checkpoint_header& header,
                         const run_state& state) {
  const auto fail = [&](const std::string& why) { throw error(path + ": " + why); };
  if (state.models.empty())
    fail("run state without a model");
  if (state.positions.empty())
    fail("run state without a data position");
  if (state.models.size() != 1 && state.models.size() != state.positions.size())
    fail("run state has " + std::to_string(state.models.size()) + " models for "
         + std::to_string(state.positions.size()) + " replicas");
  if (header.config_hash != state.config_hash)
    fail("header of config " + hash_hex(header.config_hash) + ", run state of config "
         + hash_hex(state.config_hash));
  const std::size_t layers = header.layers.empty() ? 0 : header.layers.size() - 1;
  for (const auto& m : state.models)
    if (m.size() != layers)
      fail("a model of " + std::to_string(m.size()) + " layers, header has "
           + std::to_string(layers));
  if (!state.best_layers.empty() && state.best_layers.size() != layers)
    fail("best pass of " + std::to_string(state.best_layers.size()) + " layers, header has "
         + std::to_string(layers));
  if (!state.policy_states.empty() && state.policy_states.size() != layers)
    fail("sync policy state of " + std::to_string(state.policy_states.size())
         + " layers, header has " + std::to_string(layers));
  // Each section is encoded and written in turn: only one is in memory.
  write_file_atomically(path, [&](std::ostream& os) {
    write_frame(os, checkpoint_magic, header.version,
                encode_model(model_checkpoint{header, state.models.front()}));
    write_frame(os, run_state_magic, run_state_version, encode_run_state(state));
  });
}

run_checkpoint load_run_checkpoint(const std::string& path) {
  const file_sections s = read_sections(path);
  run_checkpoint ck;
  ck.path = path;
  ck.model.header.version = s.model_version;
  decode_or_fail(path, "checkpoint", [&] { decode_model(s.model, ck.model); });
  if (!s.has_run_state)
    throw error(path
                + ": not a run checkpoint: it holds a model but no run state (a model.ckpt "
                  "written at the end of a run, or a run checkpoint cut after its model); "
                  "resume from a run-*.ckpt");
  decode_or_fail(path, "run state", [&] { decode_run_state(s.run_state, ck.model, ck.state); });
  return ck;
}

std::string run_checkpoint_name(std::uint64_t round) {
  std::string digits = std::to_string(round);
  if (digits.size() < 8)
    digits.insert(0, 8 - digits.size(), '0');
  return "run-" + digits + ".ckpt";
}

std::string write_run_checkpoint(const std::string& dir, std::size_t keep,
                                 const checkpoint_header& header, const run_state& state) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path{dir} / run_checkpoint_name(state.round);
  // save_run_checkpoint returns once the file and its directory entry are
  // fsynced: only then may older ones go.
  save_run_checkpoint(path.string(), header, state);
  std::size_t kept = 1;
  for (const auto& found : run_checkpoints_in(dir)) {
    const fs::path& p = found.second;
    if (p.filename() == path.filename())
      continue;
    if (kept < keep) {
      ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove(p, ec); // a file that cannot go stays; the run carries on
  }
  return path.string();
}

std::string resolve_resume_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    throw error(path
                + ": no such file or directory (--resume takes a run checkpoint, or the "
                  "training.output_dir of a run holding run-*.ckpt files)");
  if (!fs::is_directory(st))
    return path;
  const auto found = run_checkpoints_in(path);
  if (found.empty())
    throw error(path + ": no run checkpoint (run-*.ckpt) in this directory");
  return found.front().second.string();
}

bool may_change_on_resume(std::string_view key) {
  for (std::string_view k : {"training.max_epochs", "training.target_accuracy",
                             "training.output_dir", "topology.slices", "topology.replicas"})
    if (key == k)
      return true;
  for (std::string_view prefix : {"system.", "placement.", "nodes.", "node."})
    if (key.substr(0, prefix.size()) == prefix)
      return true;
  return false;
}

void check_resume_compatible(const run_config& now, const run_state& saved,
                             const std::string& checkpoint) {
  const auto was = canonical_map(saved.config_text);
  const auto is = canonical_map(now.canonical());
  std::map<std::string, std::pair<std::string, std::string>> keys; // key -> (was, is)
  for (const auto& [k, v] : was)
    keys[k].first = v;
  for (const auto& [k, v] : is)
    keys[k].second = v;
  std::string differences;
  std::size_t n = 0;
  for (const auto& [k, v] : keys) {
    if (may_change_on_resume(k))
      continue;
    const bool in_was = was.count(k) != 0;
    const bool in_is = is.count(k) != 0;
    if (in_was && in_is && v.first == v.second)
      continue;
    ++n;
    differences += (differences.empty() ? "" : "; ") + k + ": the run had "
                   + (in_was ? v.first : std::string{"no such key"}) + ", now "
                   + (in_is ? v.second : std::string{"no such key"});
  }
  if (n == 0)
    return;
  throw error(checkpoint + ": cannot resume: the configuration differs from the run's in "
              + std::to_string(n) + (n == 1 ? " key: " : " keys: ") + differences
              + " (a resumed run may change only training.max_epochs, "
                "training.target_accuracy, training.output_dir, topology.slices, "
                "topology.replicas and the system, placement and node settings)");
}

data_order replay_data_order(std::vector<std::uint32_t> indices, rng gen,
                             const data_position& pos) {
  if (pos.cursor > indices.size())
    throw error("data position " + std::to_string(pos.cursor) + " is beyond the "
                + std::to_string(indices.size()) + " samples of the stream");
  for (std::uint64_t e = 0; e < pos.epoch; ++e)
    shuffle(indices, gen);
  if (gen.state() != pos.rng_state)
    throw error("the data order cannot be replayed: after " + std::to_string(pos.epoch)
                + " epochs' shuffles of " + std::to_string(indices.size())
                + " samples the generator differs from the saved one (the data differ from "
                  "the run's)");
  return {std::move(indices), gen};
}

} // namespace nettorrent
