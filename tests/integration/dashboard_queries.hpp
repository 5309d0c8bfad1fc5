// The PromQL expressions of the Grafana dashboards (grafana/dashboards/*.json),
// with Grafana's template variables replaced by concrete values, so a test can
// run every dashboard query against a real Prometheus server. Header-only;
// needs RapidJSON (Debian rapidjson-dev). Also used by
// tests/unit/test_dashboards.cpp, which checks the dashboards statically.
//
//   for (const auto& q : integration::dashboard_queries(NETTORRENT_SOURCE_DIR
//   "/grafana/dashboards"))
//     run(q.expr);   // e.g. ... nettorrent_forward_seconds_bucket{job=~".+", swarm="1"}[5s] ...
//
// Substituted values (grafana_variable_values()): $swarm -> 1 (the first
// layer), $job -> .+ (the "All" value of the job variable), $__rate_interval
// -> 5s (at least 4 scrapes at config/prometheus.yml's 1 s interval, as
// Grafana computes it from the datasource's timeInterval), $__interval -> 1s,
// $__range -> 1m. All of Grafana's spellings are replaced: $var, ${var},
// ${var:format}, [[var]]. A variable without a value is an error (throws), so
// a dashboard using a new variable cannot silently send "$new" to Prometheus.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace integration {

/// One PromQL query of one panel.
struct dashboard_query {
  std::string file;      ///< dashboard file name, e.g. "swarm.json"
  std::string dashboard; ///< the dashboard's uid
  std::string title;     ///< the panel's title
  std::string ref_id;    ///< the target's refId ("A", "B", ...)
  std::string raw_expr;  ///< as written in the JSON, with Grafana variables
  std::string expr;      ///< variables substituted: plain PromQL
};

/// The concrete value each Grafana variable of the dashboards gets.
inline const std::map<std::string, std::string>& grafana_variable_values() {
  static const std::map<std::string, std::string> values = {
      {"swarm", "1"},       {"job", ".+"},     {"__rate_interval", "5s"},
      {"__interval", "1s"}, {"__range", "1m"},
  };
  return values;
}

/// One use of a Grafana variable in a string: `name` at [pos, pos + len).
struct grafana_variable_use {
  std::string name;
  std::size_t pos = 0;
  std::size_t len = 0;
};

/// Every variable use in `text`, in Grafana's three syntaxes: $name,
/// ${name}, ${name.field:format} and [[name]], [[name:format]] (names are
/// [A-Za-z0-9_]+, as in Grafana's own variable regex).
inline std::vector<grafana_variable_use> grafana_variables_in(const std::string& text) {
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; };
  std::vector<grafana_variable_use> uses;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] == '{') {
      std::size_t j = i + 2;
      while (j < text.size() && word(text[j]))
        ++j;
      const std::size_t close = text.find('}', j);
      if (j > i + 2 && close != std::string::npos
          && (j == close || text[j] == '.' || text[j] == ':')) {
        uses.push_back({text.substr(i + 2, j - i - 2), i, close + 1 - i});
        i = close + 1;
        continue;
      }
    } else if (text[i] == '$') {
      std::size_t j = i + 1;
      while (j < text.size() && word(text[j]))
        ++j;
      if (j > i + 1) {
        uses.push_back({text.substr(i + 1, j - i - 1), i, j - i});
        i = j;
        continue;
      }
    } else if (text.compare(i, 2, "[[") == 0) {
      std::size_t j = i + 2;
      while (j < text.size() && word(text[j]))
        ++j;
      const std::size_t close = text.find("]]", j);
      if (j > i + 2 && close != std::string::npos && (j == close || text[j] == ':')) {
        uses.push_back({text.substr(i + 2, j - i - 2), i, close + 2 - i});
        i = close + 2;
        continue;
      }
    }
    ++i;
  }
  return uses;
}

/// `text` with every Grafana variable replaced by its value in `values`.
/// Throws std::runtime_error naming a variable that has no value.
inline std::string substitute_grafana_variables(
    const std::string& text,
    const std::map<std::string, std::string>& values = grafana_variable_values()) {
  std::string out;
  std::size_t at = 0;
  for (const auto& use : grafana_variables_in(text)) {
    const auto it = values.find(use.name);
    if (it == values.end())
      throw std::runtime_error("no value for Grafana variable $" + use.name + " in: " + text);
    out.append(text, at, use.pos - at);
    out += it->second;
    at = use.pos + use.len;
  }
  out.append(text, at, std::string::npos);
  return out;
}

/// The dashboard files of `dir` (*.json, sorted by name). Throws if `dir` is
/// not a directory.
inline std::vector<std::filesystem::path> dashboard_files(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir))
    throw std::runtime_error(dir.string() + ": not a directory");
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".json")
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

/// Parses a JSON file strictly (no comments, no trailing commas). Throws
/// std::runtime_error with the file, offset and RapidJSON's message.
inline rapidjson::Document load_json_file(const std::filesystem::path& file) {
  std::ifstream in{file, std::ios::binary};
  if (!in)
    throw std::runtime_error(file.string() + ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  rapidjson::Document d;
  d.Parse(s.c_str(), s.size());
  if (d.HasParseError())
    throw std::runtime_error(file.string() + ": invalid JSON at offset "
                             + std::to_string(d.GetErrorOffset()) + ": "
                             + rapidjson::GetParseError_En(d.GetParseError()));
  return d;
}

/// Calls f(panel) for every panel of a dashboard, including the panels
/// nested in (collapsed) rows.
template <class F>
void for_each_panel(const rapidjson::Value& dashboard, F&& f) {
  if (!dashboard.IsObject() || !dashboard.HasMember("panels") || !dashboard["panels"].IsArray())
    return;
  for (const auto& p : dashboard["panels"].GetArray()) {
    f(p);
    if (p.IsObject() && p.HasMember("panels"))
      for_each_panel(p, f);
  }
}

/// A string member of `v`, or "" when absent or not a string.
inline std::string json_string(const rapidjson::Value& v, const char* name) {
  if (v.IsObject() && v.HasMember(name) && v[name].IsString())
    return {v[name].GetString(), v[name].GetStringLength()};
  return {};
}

/// The queries of one parsed dashboard (`file` names it in the result).
inline std::vector<dashboard_query> dashboard_queries(const rapidjson::Value& dashboard,
                                                      const std::string& file) {
  std::vector<dashboard_query> out;
  const std::string uid = json_string(dashboard, "uid");
  for_each_panel(dashboard, [&](const rapidjson::Value& panel) {
    if (!panel.IsObject() || !panel.HasMember("targets") || !panel["targets"].IsArray())
      return;
    for (const auto& t : panel["targets"].GetArray()) {
      const std::string raw = json_string(t, "expr");
      if (raw.empty())
        continue;
      out.push_back({file, uid, json_string(panel, "title"), json_string(t, "refId"), raw,
                     substitute_grafana_variables(raw)});
    }
  });
  return out;
}

/// Every PromQL expression of every dashboard in `dir`, variables
/// substituted. Throws std::runtime_error on an unreadable or invalid file
/// or a variable without a value.
inline std::vector<dashboard_query> dashboard_queries(const std::string& dir) {
  std::vector<dashboard_query> out;
  for (const auto& file : dashboard_files(dir)) {
    const auto d = load_json_file(file);
    auto qs = dashboard_queries(d, file.filename().string());
    out.insert(out.end(), std::make_move_iterator(qs.begin()), std::make_move_iterator(qs.end()));
  }
  return out;
}

} // namespace integration

// tests/integration/test_prometheus.cpp calls these unqualified.
using integration::dashboard_queries;
using integration::dashboard_query;
