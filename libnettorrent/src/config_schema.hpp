// Private to libnettorrent: the machinery behind every checked INI file (the
// run config, the cluster description, the node file). A schema is a list of
// options, one per `section.key`, each knowing how to read its value (typed
// readers that throw nettorrent::error without location) and how to show it.
// apply_entry() adds the location (file:line) and the key to every error.
#pragma once

#include <cstddef>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "nettorrent/config.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/ini.hpp"

namespace nettorrent::schema {

// --- typed readers: throw nettorrent::error without location ---------------

[[noreturn]] void wrong_type(const ini_value& v, const char* expected);
std::size_t read_size(const ini_value& v, std::size_t lo, std::size_t hi);
double read_real(const ini_value& v, double lo, double hi);
/// A quoted string or an atom.
std::string read_string(const ini_value& v);
bool read_bool(const ini_value& v);

/// Reads a list element by element with `read`; errors name the element.
/// `expected` describes the list for a value that is not one.
template <class Read>
auto read_list(const ini_value& v, const char* expected, Read read) {
  if (v.kind != ini_value::type::list)
    wrong_type(v, expected);
  std::vector<decltype(read(v))> out;
  for (std::size_t i = 0; i < v.list.size(); ++i) {
    try {
      out.push_back(read(v.list[i]));
    } catch (const error& e) {
      throw error("element " + std::to_string(i) + ": " + e.what());
    }
  }
  return out;
}

std::vector<std::size_t> read_size_list(const ini_value& v, std::size_t lo, std::size_t hi);
/// A list of quoted strings (or atoms).
std::vector<std::string> read_string_list(const ini_value& v);

/// "[a, b]" with each element shown by `show`.
template <class T, class Show>
std::string show_list(const std::vector<T>& xs, Show show) {
  std::string s = "[";
  for (std::size_t i = 0; i < xs.size(); ++i)
    s += (i > 0 ? ", " : "") + show(xs[i]);
  return s + "]";
}

std::string show_list(const std::vector<std::size_t>& xs);
std::string show_list(const std::vector<std::string>& xs); ///< ["a", "b"]
std::string quote(const std::string& s);                   ///< "s"

// --- canonical text ------------------------------------------------------------

/// The canonical text of a configuration: `lines` (`section.key=value`, no
/// '\n' in them) sorted byte-wise, each followed by '\n'. Sorting makes the
/// text, and every hash of it, independent of the order a schema declares its
/// keys in and of the order a file writes them in.
std::string sorted_lines(std::vector<std::string> lines);

/// The '\n'-terminated lines of `text`, without their '\n'.
std::vector<std::string> split_lines(const std::string& text);

// --- options -----------------------------------------------------------------

/// One `section.key` of a schema over the configuration type `Config`.
template <class Config>
struct option {
  const char* name;
  const char* type;
  const char* help;
  std::function<void(Config&, const ini_value&)> set;
  std::function<std::string(const Config&)> get;
  bool affects_result = true; ///< part of run_config::canonical() and its hash
  bool required = false;      ///< a file must set it
  /// A result-affecting key added after hashes were first written: left out
  /// of canonical() while get() returns this, so every earlier hash (in
  /// checkpoints, cluster admission) stays what it was.
  const char* unhashed_default = nullptr;
};

/// The options of a run configuration ([model], [data], [training],
/// [optimizer], [topology], [system]), in the order `nettorrent keys` lists
/// them (no hash depends on this order: see sorted_lines()).
const std::vector<option<run_config>>& run_options();

/// The run options re-targeted at a run_config inside `Outer`, so a larger
/// file (the cluster description) holds the same sections with the same
/// readers and checks. `access` maps `Outer&` to `run_config&` and
/// `const Outer&` to `const run_config&`: `[](auto& o) -> auto& { return o.run; }`.
template <class Outer, class Access>
std::vector<option<Outer>> lift(const std::vector<option<run_config>>& specs, Access access) {
  std::vector<option<Outer>> out;
  for (const auto& s : specs)
    out.push_back({s.name, s.type, s.help,
                   [set = s.set, access](Outer& o, const ini_value& v) { set(access(o), v); },
                   [get = s.get, access](const Outer& o) { return get(access(o)); },
                   s.affects_result, s.required, s.unhashed_default});
  return out;
}

template <class Config>
const option<Config>* find_option(const std::vector<option<Config>>& specs,
                                  const std::string& name) {
  for (const auto& s : specs)
    if (name == s.name)
      return &s;
  return nullptr;
}

/// "model, data, training": the sections of a schema, in order of first use.
template <class Config>
std::string sections_of(const std::vector<option<Config>>& specs) {
  std::vector<std::string> seen;
  for (const auto& s : specs) {
    const std::string n = s.name;
    const std::string sec = n.substr(0, n.find('.'));
    bool known = false;
    for (const auto& x : seen)
      known = known || x == sec;
    if (!known)
      seen.push_back(sec);
  }
  std::string out;
  for (const auto& x : seen)
    out += (out.empty() ? "" : ", ") + x;
  return out;
}

/// "batch_size, max_epochs": the keys of one section.
template <class Config>
std::string keys_of_section(const std::vector<option<Config>>& specs, const std::string& section) {
  std::string out;
  for (const auto& s : specs) {
    const std::string n = s.name;
    if (n.compare(0, section.size() + 1, section + ".") == 0)
      out += (out.empty() ? "" : ", ") + n.substr(section.size() + 1);
  }
  return out;
}

/// Applies one entry; every error names its origin (file:line) and the key.
template <class Config>
void apply_entry(const ini_entry& e, Config& cfg, const std::vector<option<Config>>& specs) {
  const std::string name = e.name();
  const option<Config>* spec = find_option(specs, name);
  if (spec == nullptr) {
    const std::string sections = sections_of(specs);
    const std::string known = keys_of_section(specs, e.section);
    if (e.section.empty())
      throw error(e.origin + ": key " + name + " is outside any section (sections: " + sections
                  + ")");
    if (known.empty())
      throw error(e.origin + ": " + name + ": unknown section [" + e.section
                  + "] (known: " + sections + ")");
    throw error(e.origin + ": unknown key " + name + " (known keys in [" + e.section + "]: " + known
                + ")");
  }
  try {
    spec->set(cfg, e.value);
  } catch (const error& ex) {
    throw error(e.origin + ": " + name + ": " + ex.what());
  }
}

/// Applies every entry of `doc`, then checks that every required option was
/// set (an error naming the file and the missing key).
template <class Config>
void apply_document(const ini_document& doc, Config& cfg,
                    const std::vector<option<Config>>& specs) {
  std::set<std::string> seen;
  for (const auto& e : doc.entries) {
    apply_entry(e, cfg, specs);
    seen.insert(e.name());
  }
  for (const auto& s : specs)
    if (s.required && seen.count(s.name) == 0)
      throw error(doc.path + ": missing required key " + s.name + " (" + s.help + ")");
}

/// One line per key: name, type, default and meaning.
template <class Config>
std::string describe(const std::vector<option<Config>>& specs, const Config& defaults) {
  std::string out;
  for (const auto& s : specs)
    out += std::string{"  "} + s.name + " (" + s.type + ", "
           + (s.required ? std::string{"required"} : "default " + s.get(defaults)) + ")\n      "
           + s.help + "\n";
  return out;
}

/// Where `key` was set in `doc` ("file:line"), or just the file's path.
std::string origin_of(const ini_document& doc, const std::string& key);

/// Prefixes a validation message that starts with a key ("topology.slices:
/// ...", "topology.sync_every = ...") with the place that key was set.
std::string locate(const ini_document& doc, const std::string& message);

} // namespace nettorrent::schema
