// A reader for CAF-style INI files (the syntax `--config-file=` takes in CAF
// 0.17): `[section]` headers, `key=value` lines, `;` comments, strings in
// double quotes, atoms in single quotes, booleans, integers, reals,
// durations with a unit (`5s`, `250ms`, `1min`) and one-line lists `[1, 2]`.
// CAF itself silently drops unknown keys and mistyped values; NetTorrent
// reads the file with this parser instead so every entry can be checked and
// every error can name file, line and key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nettorrent {

struct ini_value {
  enum class type { boolean, integer, real, string, atom, duration, list };
  type kind = type::string;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0;              ///< also set for integers
  std::string text;             ///< string/atom content; the source text otherwise
  std::int64_t nanoseconds = 0; ///< durations
  std::vector<ini_value> list;
};

/// "boolean", "integer", ... for error messages.
const char* to_string(ini_value::type t) noexcept;

struct ini_entry {
  std::string section; ///< empty for keys before the first header
  std::string key;
  ini_value value;
  std::string origin; ///< "file:line" or "command line"
  std::string name() const { return section.empty() ? key : section + "." + key; }
};

struct ini_document {
  std::string path;
  std::vector<ini_entry> entries;
};

/// Parses a value as written on the right of `=`. Throws nettorrent::error
/// (without location; callers add it).
ini_value parse_ini_value(const std::string& text);

/// Parses `text`, naming `path` in errors. Duplicate keys are an error.
ini_document parse_ini_text(const std::string& text, const std::string& path);

/// Reads and parses a file. A missing or unreadable file is an error naming it.
ini_document parse_ini_file(const std::string& path);

} // namespace nettorrent
