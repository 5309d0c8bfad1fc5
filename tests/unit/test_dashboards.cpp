// Static checks of the Grafana files (grafana/): every dashboard JSON parses,
// uids are unique, every datasource reference (panel, target, template
// variable) is the uid provisioned in grafana/provisioning/datasources/,
// every $variable is defined (or a Grafana built-in), every PromQL expression
// uses only NetTorrent's metric families, with labels those families have, and
// known PromQL functions, and panels sit on the 24-column grid without
// overlapping; and Prometheus's own parser (promtool check rules) accepts every
// query. The checkers are also run on broken dashboards, so each check is
// shown to fail when it should. Whether every query returns data from a
// real Prometheus is tests/integration/test_prometheus.cpp's job (it uses the
// same dashboard_queries.hpp).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <rapidjson/document.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "../integration/dashboard_queries.hpp"
#include "nettorrent/metric_families.hpp"

namespace fs = std::filesystem;
namespace nt = nettorrent;

namespace {

const fs::path source_dir = NETTORRENT_SOURCE_DIR;
const fs::path dashboards_dir = source_dir / "grafana" / "dashboards";
const fs::path datasources_dir = source_dir / "grafana" / "provisioning" / "datasources";
const fs::path providers_dir = source_dir / "grafana" / "provisioning" / "dashboards";

// --- what the dashboards may use ----------------------------------------------

struct family {
  nt::metric_type type;
  std::set<std::string> labels;
};

/// The metric families every NetTorrent process exports and their labels,
/// from the table actors/metrics.cpp registers them from.
const std::map<std::string, family>& families() {
  static const std::map<std::string, family> f = [] {
    std::map<std::string, family> m;
    for (const auto& x : nt::metric_families) {
      family& e = m[std::string{x.name}];
      e.type = x.type;
      for (auto l : x.labels)
        if (!l.empty())
          e.labels.emplace(l);
    }
    return m;
  }();
  return f;
}

/// The labels series `name` carries in Prometheus (the family's, plus `job`
/// and `instance` added by the scrape, plus `le` on histogram buckets), or
/// nullopt-like false if `name` is no series NetTorrent exports.
bool series_labels(const std::string& name, std::set<std::string>& labels) {
  const auto& f = families();
  std::string base = name;
  bool bucket = false;
  if (auto it = f.find(name); it != f.end()) {
    if (it->second.type == nt::metric_type::histogram)
      return false; // a histogram is only queried through its _bucket/_sum/_count
  } else {
    bool found = false;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
        base = name.substr(0, name.size() - s.size());
        const auto h = f.find(base);
        if (h != f.end() && h->second.type == nt::metric_type::histogram) {
          found = true;
          bucket = s == "_bucket";
        }
        break;
      }
    }
    if (!found)
      return false;
  }
  labels = f.at(base).labels;
  labels.insert({"job", "instance"});
  if (bucket)
    labels.insert("le");
  return true;
}

/// Grafana's built-in variables the dashboards may use (and
/// dashboard_queries.hpp substitutes).
const std::set<std::string> builtin_variables = {"__rate_interval", "__interval", "__range"};

/// PromQL functions (Prometheus 2.42) and aggregation operators.
const std::set<std::string> promql_functions = {"abs",
                                                "absent",
                                                "absent_over_time",
                                                "acos",
                                                "acosh",
                                                "asin",
                                                "asinh",
                                                "atan",
                                                "atanh",
                                                "avg_over_time",
                                                "ceil",
                                                "changes",
                                                "clamp",
                                                "clamp_max",
                                                "clamp_min",
                                                "cos",
                                                "cosh",
                                                "count_over_time",
                                                "days_in_month",
                                                "day_of_month",
                                                "day_of_week",
                                                "day_of_year",
                                                "deg",
                                                "delta",
                                                "deriv",
                                                "exp",
                                                "floor",
                                                "histogram_quantile",
                                                "holt_winters",
                                                "hour",
                                                "idelta",
                                                "increase",
                                                "irate",
                                                "label_join",
                                                "label_replace",
                                                "last_over_time",
                                                "ln",
                                                "log10",
                                                "log2",
                                                "max_over_time",
                                                "min_over_time",
                                                "minute",
                                                "month",
                                                "pi",
                                                "predict_linear",
                                                "present_over_time",
                                                "quantile_over_time",
                                                "rad",
                                                "rate",
                                                "resets",
                                                "round",
                                                "scalar",
                                                "sgn",
                                                "sin",
                                                "sinh",
                                                "sort",
                                                "sort_desc",
                                                "sqrt",
                                                "stddev_over_time",
                                                "stdvar_over_time",
                                                "sum_over_time",
                                                "tan",
                                                "tanh",
                                                "time",
                                                "timestamp",
                                                "vector",
                                                "year"};
const std::set<std::string> promql_aggregations = {"sum",          "min",     "max",    "avg",
                                                   "group",        "stddev",  "stdvar", "count",
                                                   "count_values", "bottomk", "topk",   "quantile"};
const std::set<std::string> promql_keywords = {"and",   "or",  "unless", "bool",  "offset",
                                               "atan2", "inf", "nan",    "start", "end"};
const std::set<std::string> promql_label_lists = {"by",       "without",    "on",
                                                  "ignoring", "group_left", "group_right"};

// --- a small PromQL scanner ---------------------------------------------------

struct token {
  enum kind_t { ident, string, number, punct } kind;
  std::string text;
};

/// Splits PromQL into identifiers, string literals, numbers/durations and
/// punctuation. Throws on an unterminated string.
std::vector<token> tokenize(const std::string& q) {
  std::vector<token> out;
  std::size_t i = 0;
  auto ident_start = [](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  };
  auto ident_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  };
  while (i < q.size()) {
    const char c = q[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '"' || c == '\'' || c == '`') {
      std::size_t j = i + 1;
      std::string s;
      while (j < q.size() && q[j] != c) {
        if (q[j] == '\\' && c != '`' && j + 1 < q.size())
          ++j;
        s += q[j++];
      }
      if (j >= q.size())
        throw std::runtime_error("unterminated string in: " + q);
      out.push_back({token::string, s});
      i = j + 1;
    } else if (ident_start(c)) {
      std::size_t j = i;
      while (j < q.size() && ident_char(q[j]))
        ++j;
      out.push_back({token::ident, q.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))
               || (c == '.' && i + 1 < q.size()
                   && std::isdigit(static_cast<unsigned char>(q[i + 1])))) {
      std::size_t j = i;
      while (j < q.size() && (std::isalnum(static_cast<unsigned char>(q[j])) || q[j] == '.'))
        ++j;
      out.push_back({token::number, q.substr(i, j - i)});
      i = j;
    } else {
      // Two-character operators first.
      static const std::vector<std::string> two = {"=~", "!~", "!=", "==", ">=", "<="};
      std::string p(1, c);
      for (const auto& t : two)
        if (q.compare(i, 2, t) == 0)
          p = t;
      out.push_back({token::punct, p});
      i += p.size();
    }
  }
  return out;
}

/// What one expression refers to.
struct promql_refs {
  std::vector<std::pair<std::string, std::set<std::string>>> selectors; ///< metric, matcher labels
  std::set<std::string> functions;   ///< functions and aggregations called
  std::set<std::string> grouping;    ///< labels in by/without/on/ignoring/group_x lists
  std::vector<std::string> problems; ///< what the scanner could not accept
};

promql_refs scan_promql(const std::string& q) {
  promql_refs r;
  std::vector<token> t;
  try {
    t = tokenize(q);
  } catch (const std::exception& e) {
    r.problems.push_back(e.what());
    return r;
  }
  int parens = 0, braces = 0, brackets = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const auto& tok = t[i];
    auto next_is = [&](const char* p) {
      return i + 1 < t.size() && t[i + 1].kind == token::punct && t[i + 1].text == p;
    };
    if (tok.kind == token::punct) {
      const auto& p = tok.text;
      parens += p == "(" ? 1 : p == ")" ? -1 : 0;
      brackets += p == "[" ? 1 : p == "]" ? -1 : 0;
      if (p == "[") { // range or subquery: a duration, skip it
        while (i + 1 < t.size() && !(t[i + 1].kind == token::punct && t[i + 1].text == "]"))
          ++i;
      } else if (p == "{") {
        r.problems.push_back(
            "a selector without a metric name (write the name, not {__name__=...})");
        ++braces;
      } else if (p == "}") {
        --braces;
      }
      if (parens < 0 || brackets < 0 || braces < 0)
        r.problems.push_back("unbalanced " + p);
      continue;
    }
    if (tok.kind != token::ident)
      continue;
    const auto& name = tok.text;
    if (promql_label_lists.count(name)) {
      if (next_is("(")) { // a label list
        ++i;
        while (i + 1 < t.size() && !(t[i + 1].kind == token::punct && t[i + 1].text == ")")) {
          ++i;
          if (t[i].kind == token::ident)
            r.grouping.insert(t[i].text);
          else if (!(t[i].kind == token::punct && t[i].text == ","))
            r.problems.push_back("unexpected '" + t[i].text + "' in the label list of " + name);
        }
        if (i + 1 >= t.size())
          r.problems.push_back("unterminated label list of " + name);
        ++i; // the ')'
      } else if (name != "group_left" && name != "group_right") {
        r.problems.push_back(name + " without a label list");
      }
      continue;
    }
    if (promql_keywords.count(name))
      continue;
    if (promql_aggregations.count(name)
        && (next_is("(")
            || (i + 1 < t.size() && t[i + 1].kind == token::ident
                && (t[i + 1].text == "by" || t[i + 1].text == "without")))) {
      r.functions.insert(name);
      continue;
    }
    if (next_is("(")) {
      r.functions.insert(name);
      if (!promql_functions.count(name) && !promql_aggregations.count(name))
        r.problems.push_back("unknown function " + name + "()");
      continue;
    }
    // A metric name, maybe with label matchers.
    std::set<std::string> matchers;
    if (next_is("{")) {
      i += 2;
      while (i < t.size() && !(t[i].kind == token::punct && t[i].text == "}")) {
        // label op "value" [,]
        if (t[i].kind == token::ident && i + 2 < t.size() && t[i + 1].kind == token::punct
            && (t[i + 1].text == "=" || t[i + 1].text == "!=" || t[i + 1].text == "=~"
                || t[i + 1].text == "!~")
            && t[i + 2].kind == token::string) {
          matchers.insert(t[i].text);
          i += 3;
          if (i < t.size() && t[i].kind == token::punct && t[i].text == ",")
            ++i;
        } else {
          r.problems.push_back("bad label matcher near '" + t[i].text + "' after " + name);
          ++i;
        }
      }
      if (i >= t.size())
        r.problems.push_back("unterminated label matchers after " + name);
    }
    r.selectors.emplace_back(name, matchers);
  }
  if (parens != 0 || braces != 0 || brackets != 0)
    r.problems.push_back("unbalanced brackets");
  return r;
}

/// Problems of one PromQL expression (variables already substituted):
/// unknown series, labels a series does not have, unknown functions,
/// histogram_quantile without buckets grouped by le.
std::vector<std::string> check_promql(const std::string& expr) {
  auto r = scan_promql(expr);
  std::vector<std::string> problems = r.problems;
  if (r.selectors.empty())
    problems.push_back("no metric in the expression");
  std::set<std::string> all_labels;
  bool has_bucket = false;
  for (const auto& [metric, matchers] : r.selectors) {
    std::set<std::string> labels;
    if (!series_labels(metric, labels)) {
      problems.push_back("unknown metric " + metric);
      continue;
    }
    has_bucket = has_bucket || labels.count("le") > 0;
    all_labels.insert(labels.begin(), labels.end());
    for (const auto& m : matchers)
      if (!labels.count(m))
        problems.push_back(metric + " has no label " + m);
  }
  for (const auto& g : r.grouping)
    if (!all_labels.count(g))
      problems.push_back("grouping by " + g + ", a label no series of the expression has");
  if (r.functions.count("histogram_quantile") && (!has_bucket || !r.grouping.count("le")))
    problems.push_back("histogram_quantile needs _bucket series aggregated by le");
  return problems;
}

// --- the dashboard checker ----------------------------------------------------

std::string str(const rapidjson::Value& v, const char* name) {
  return integration::json_string(v, name);
}

/// Every datasource reference anywhere in `v` must be {"type":"prometheus",
/// "uid": one of `uids`}. `path` names the place in problems.
void check_datasources(const rapidjson::Value& v, const std::string& path,
                       const std::set<std::string>& uids, std::vector<std::string>& problems) {
  if (v.IsObject()) {
    for (const auto& m : v.GetObject()) {
      const std::string key = m.name.GetString();
      const std::string here = path + "." + key;
      if (key == "datasource") {
        const auto& ds = m.value;
        if (!ds.IsObject())
          problems.push_back(here
                             + ": not a {type, uid} object (a name or null resolves to whatever "
                               "datasource has that name or is the default)");
        else if (str(ds, "type") != "prometheus" || !uids.count(str(ds, "uid")))
          problems.push_back(here + ": {type: \"" + str(ds, "type") + "\", uid: \"" + str(ds, "uid")
                             + "\"} is not the provisioned Prometheus datasource");
      } else {
        check_datasources(m.value, here, uids, problems);
      }
    }
  } else if (v.IsArray()) {
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
      check_datasources(v[i], path + "[" + std::to_string(i) + "]", uids, problems);
  }
}

/// Every Grafana variable used in any string of `v` must be in `defined`.
/// The state of template variables (`current`, `options`) is not a use.
void check_variable_uses(const rapidjson::Value& v, const std::string& path,
                         const std::set<std::string>& defined, std::vector<std::string>& problems) {
  if (v.IsString()) {
    for (const auto& use : integration::grafana_variables_in(v.GetString()))
      if (!defined.count(use.name) && !builtin_variables.count(use.name))
        problems.push_back(path + ": $" + use.name
                           + " is not defined in templating.list nor a Grafana built-in");
  } else if (v.IsObject()) {
    for (const auto& m : v.GetObject()) {
      const std::string key = m.name.GetString();
      if (path.find(".templating.list[") != std::string::npos
          && (key == "current" || key == "options"))
        continue;
      check_variable_uses(m.value, path + "." + key, defined, problems);
    }
  } else if (v.IsArray()) {
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
      check_variable_uses(v[i], path + "[" + std::to_string(i) + "]", defined, problems);
  }
}

const std::set<std::string> panel_types = {"timeseries", "stat", "bargauge", "gauge",
                                           "table",      "text", "row"};

/// Everything wrong with one dashboard, given the provisioned datasource uids.
std::vector<std::string> check_dashboard(const rapidjson::Value& d,
                                         const std::set<std::string>& uids) {
  std::vector<std::string> problems;
  if (!d.IsObject())
    return {"not a JSON object"};
  if (str(d, "uid").empty())
    problems.push_back("no uid");
  if (str(d, "title").empty())
    problems.push_back("no title");
  if (!d.HasMember("schemaVersion") || !d["schemaVersion"].IsInt()
      || d["schemaVersion"].GetInt() < 36)
    problems.push_back("schemaVersion missing or below 36 (Grafana 9)");
  if (!d.HasMember("panels") || !d["panels"].IsArray() || d["panels"].Empty())
    problems.push_back("no panels");

  // Datasources, everywhere.
  check_datasources(d, "$", uids, problems);

  // Variables: defined ones, then every use.
  std::set<std::string> defined;
  if (d.HasMember("templating") && d["templating"].HasMember("list")
      && d["templating"]["list"].IsArray()) {
    for (const auto& v : d["templating"]["list"].GetArray()) {
      const std::string name = str(v, "name");
      if (name.empty() || !defined.insert(name).second)
        problems.push_back("templating: variable with an empty or duplicate name \"" + name + "\"");
      if (str(v, "type") == "query") {
        if (!v.HasMember("datasource"))
          problems.push_back("templating " + name + ": query variable without a datasource");
        // label_values(metric{...}, label): the metric and label must exist,
        // in the query Grafana runs (a string, or {query: ...} since Grafana
        // 9.4) and in the definition it shows.
        std::vector<std::string> qs;
        if (v.HasMember("query"))
          qs.push_back(v["query"].IsString() ? v["query"].GetString() : str(v["query"], "query"));
        if (v.HasMember("definition"))
          qs.push_back(str(v, "definition"));
        if (qs.empty())
          problems.push_back("templating " + name + ": query variable without a query");
        static const std::regex lv(
            R"(^\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$)");
        for (const auto& q : qs) {
          std::smatch m;
          std::set<std::string> labels;
          if (!std::regex_match(q, m, lv))
            problems.push_back("templating " + name + ": query \"" + q
                               + "\" is not label_values(metric, label)");
          else if (!series_labels(m[1], labels))
            problems.push_back("templating " + name + ": unknown metric " + std::string(m[1]));
          else if (!labels.count(m[3]))
            problems.push_back("templating " + name + ": " + std::string(m[1]) + " has no label "
                               + std::string(m[3]));
        }
      }
    }
  }
  check_variable_uses(d, "$", defined, problems);

  // Panels: grid, ids, datasources present, targets and their PromQL.
  std::set<int> ids;
  struct rect {
    int x, y, w, h;
    std::string title;
  };
  std::vector<rect> rects;
  integration::for_each_panel(d, [&](const rapidjson::Value& p) {
    const std::string title = str(p, "title");
    const std::string where = "panel \"" + title + "\"";
    if (!p.IsObject())
      return problems.push_back("a panel that is not an object");
    if (!panel_types.count(str(p, "type")))
      problems.push_back(where + ": unexpected type \"" + str(p, "type") + "\"");
    if (!p.HasMember("id") || !p["id"].IsInt() || !ids.insert(p["id"].GetInt()).second)
      problems.push_back(where + ": missing or duplicate id");
    if (!p.HasMember("gridPos") || !p["gridPos"].IsObject()) {
      problems.push_back(where + ": no gridPos");
    } else {
      const auto& g = p["gridPos"];
      auto num = [&](const char* k) { return g.HasMember(k) && g[k].IsInt() ? g[k].GetInt() : -1; };
      rect r{num("x"), num("y"), num("w"), num("h"), title};
      if (r.x < 0 || r.y < 0 || r.w < 1 || r.h < 1 || r.x + r.w > 24)
        problems.push_back(where + ": gridPos outside the 24-column grid");
      for (const auto& o : rects)
        if (r.x < o.x + o.w && o.x < r.x + r.w && r.y < o.y + o.h && o.y < r.y + r.h)
          problems.push_back(where + ": overlaps panel \"" + o.title + "\"");
      rects.push_back(r);
    }
    if (str(p, "type") == "row" || str(p, "type") == "text")
      return;
    if (!p.HasMember("datasource"))
      problems.push_back(where + ": no datasource");
    if (!p.HasMember("targets") || !p["targets"].IsArray() || p["targets"].Empty())
      return problems.push_back(where + ": no targets");
    std::set<std::string> refs;
    for (const auto& t : p["targets"].GetArray()) {
      const std::string ref = str(t, "refId");
      if (ref.empty() || !refs.insert(ref).second)
        problems.push_back(where + ": target with an empty or duplicate refId \"" + ref + "\"");
      if (!t.HasMember("datasource"))
        problems.push_back(where + " " + ref + ": no datasource");
      const std::string raw = str(t, "expr");
      if (raw.empty()) {
        problems.push_back(where + " " + ref + ": no expr");
        continue;
      }
      std::string expr;
      try {
        expr = integration::substitute_grafana_variables(raw);
      } catch (const std::exception& e) {
        problems.push_back(where + " " + ref + ": " + e.what());
        continue;
      }
      for (const auto& pr : check_promql(expr))
        problems.push_back(where + " " + ref + ": " + pr + " in: " + raw);
    }
  });
  return problems;
}

/// Joins problems one per line, for failure messages.
std::string lines(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v)
    s += "  " + x + "\n";
  return s;
}

/// Values of `key:` lines of minimal YAML files (block style, one key per
/// line; quotes and trailing comments stripped).
std::vector<std::string> yaml_values(const fs::path& dir, const std::string& key) {
  std::vector<std::string> values;
  const std::regex line(R"(^\s*(?:-\s+)?)" + key + R"(:\s*(.*?)\s*$)");
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".yaml" && ext != ".yml"))
      continue;
    std::ifstream in{e.path()};
    std::string l;
    while (std::getline(in, l)) {
      std::smatch m;
      if (!std::regex_match(l, m, line))
        continue;
      std::string v = m[1];
      if (!v.empty() && (v[0] == '"' || v[0] == '\'')) {
        const auto close = v.find(v[0], 1);
        v = v.substr(1, close == std::string::npos ? std::string::npos : close - 1);
      } else if (const auto hash = v.find(" #"); hash != std::string::npos) {
        v = v.substr(0, hash);
        while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back())))
          v.pop_back();
      }
      values.push_back(v);
    }
  }
  return values;
}

/// The uids of the provisioned datasources.
std::set<std::string> provisioned_uids() {
  const auto v = yaml_values(datasources_dir, "uid");
  return {v.begin(), v.end()};
}

rapidjson::Document parse(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  EXPECT_FALSE(d.HasParseError()) << json;
  return d;
}

// --- the real files ----------------------------------------------------------

TEST(GrafanaProvisioning, DatasourceHasOneFixedUid) {
  const auto uids = yaml_values(datasources_dir, "uid");
  ASSERT_EQ(uids.size(), 1u) << "expected exactly one provisioned datasource with a uid in "
                             << datasources_dir;
  EXPECT_FALSE(uids[0].empty());
  const auto types = yaml_values(datasources_dir, "type");
  ASSERT_EQ(types.size(), 1u);
  EXPECT_EQ(types[0], "prometheus");
  const auto urls = yaml_values(datasources_dir, "url");
  ASSERT_EQ(urls.size(), 1u);
  EXPECT_EQ(urls[0].rfind("http", 0), 0u) << urls[0];
}

TEST(GrafanaProvisioning, DashboardProviderIsAFileProviderWithAnAbsolutePath) {
  const auto types = yaml_values(providers_dir, "type");
  ASSERT_EQ(types.size(), 1u) << "expected one dashboard provider in " << providers_dir;
  EXPECT_EQ(types[0], "file");
  const auto paths = yaml_values(providers_dir, "path");
  ASSERT_EQ(paths.size(), 1u);
  // Grafana does not resolve a relative path against the provider file.
  EXPECT_TRUE(!paths[0].empty() && (paths[0][0] == '/' || paths[0][0] == '$')) << paths[0];
}

TEST(Dashboards, EveryFileParsesAndUidsAreUnique) {
  const auto files = integration::dashboard_files(dashboards_dir);
  ASSERT_GE(files.size(), 2u) << "expected at least the overview and the swarm dashboard";
  std::map<std::string, std::string> uid_file;
  for (const auto& f : files) {
    rapidjson::Document d;
    ASSERT_NO_THROW(d = integration::load_json_file(f)) << f;
    ASSERT_TRUE(d.IsObject()) << f;
    const std::string uid = str(d, "uid");
    EXPECT_FALSE(uid.empty()) << f << " has no uid";
    EXPECT_LE(uid.size(), 40u) << f << ": Grafana uids are at most 40 characters";
    const auto [it, fresh] = uid_file.emplace(uid, f.filename().string());
    EXPECT_TRUE(fresh) << "uid \"" << uid << "\" of " << f.filename() << " is also the uid of "
                       << it->second;
  }
  EXPECT_TRUE(uid_file.count("nettorrent-overview"));
  EXPECT_TRUE(uid_file.count("nettorrent-swarm"));
}

TEST(Dashboards, EveryDashboardPassesEveryCheck) {
  const auto uids = provisioned_uids();
  ASSERT_EQ(uids.size(), 1u);
  for (const auto& f : integration::dashboard_files(dashboards_dir)) {
    const auto d = integration::load_json_file(f);
    const auto problems = check_dashboard(d, uids);
    EXPECT_TRUE(problems.empty()) << f.filename() << ":\n" << lines(problems);
  }
}

TEST(Dashboards, SwarmDashboardSelectsASwarm) {
  const auto d = integration::load_json_file(dashboards_dir / "swarm.json");
  bool found = false;
  for (const auto& v : d["templating"]["list"].GetArray())
    if (str(v, "name") == "swarm") {
      found = true;
      EXPECT_EQ(str(v, "definition"), "label_values(nettorrent_samples_total, swarm)");
      EXPECT_EQ(str(v["datasource"], "uid"), *provisioned_uids().begin());
    }
  ASSERT_TRUE(found) << "swarm.json has no swarm variable";
  // Every query of the swarm dashboard is about the selected swarm.
  for (const auto& q : integration::dashboard_queries(d, "swarm.json"))
    EXPECT_NE(q.raw_expr.find("swarm=\"$swarm\""), std::string::npos)
        << q.title << ": " << q.raw_expr;
}

TEST(Dashboards, OverviewShowsEveryRunLevelMetric) {
  const auto d = integration::load_json_file(dashboards_dir / "overview.json");
  std::set<std::string> used;
  for (const auto& q : integration::dashboard_queries(d, "overview.json"))
    for (const auto& [metric, labels] : scan_promql(q.expr).selectors)
      used.insert(metric);
  for (const char* m :
       {"nettorrent_samples_total", "nettorrent_training_loss", "nettorrent_validation_accuracy",
        "nettorrent_best_validation_accuracy", "nettorrent_test_accuracy",
        "nettorrent_time_to_target_seconds", "nettorrent_epoch", "nettorrent_peers_alive",
        "nettorrent_dropped_messages_total", "nettorrent_peer_failures_total",
        "nettorrent_recoveries_total", "nettorrent_recovery_seconds_count",
        "nettorrent_samples_redone_total", "nettorrent_nodes_alive"})
    EXPECT_TRUE(used.count(m)) << "overview.json does not show " << m;
}

TEST(DashboardQueries, ExtractsEveryTargetWithVariablesSubstituted) {
  std::size_t targets = 0;
  for (const auto& f : integration::dashboard_files(dashboards_dir)) {
    const auto d = integration::load_json_file(f);
    integration::for_each_panel(d, [&](const rapidjson::Value& p) {
      if (p.HasMember("targets"))
        targets += p["targets"].Size();
    });
  }
  const auto qs = dashboard_queries(dashboards_dir.string());
  ASSERT_EQ(qs.size(), targets);
  bool saw_swarm = false, saw_rate_interval = false;
  for (const auto& q : qs) {
    EXPECT_EQ(q.expr.find('$'), std::string::npos) << q.expr;
    EXPECT_EQ(q.expr.find("[["), std::string::npos) << q.expr;
    EXPECT_FALSE(q.dashboard.empty());
    EXPECT_FALSE(q.title.empty());
    EXPECT_FALSE(q.ref_id.empty());
    if (q.raw_expr.find("swarm=\"$swarm\"") != std::string::npos) {
      saw_swarm = true;
      EXPECT_NE(q.expr.find("swarm=\"1\""), std::string::npos) << q.expr;
    }
    if (q.raw_expr.find("[$__rate_interval]") != std::string::npos) {
      saw_rate_interval = true;
      EXPECT_NE(q.expr.find("[5s]"), std::string::npos) << q.expr;
    }
  }
  EXPECT_TRUE(saw_swarm);
  EXPECT_TRUE(saw_rate_interval);
}

/// `s` as a YAML double-quoted scalar.
std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s)
    out += c == '"' ? std::string("\\\"") : c == '\\' ? std::string("\\\\") : std::string(1, c);
  return out + "\"";
}

/// Runs `promtool check rules` on a rule file recording each of `exprs`;
/// returns promtool's exit status and output. -1 when promtool is missing.
std::pair<int, std::string> promtool_check(const std::vector<std::string>& exprs,
                                           const std::string& tag) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    return {-1, "promtool not found"};
  const fs::path dir =
      fs::temp_directory_path() / ("nettorrent-promtool-" + std::to_string(::getpid()) + "-" + tag);
  fs::create_directories(dir);
  {
    std::ofstream rules{dir / "rules.yml"};
    rules << "groups:\n  - name: dashboards\n    rules:\n";
    for (std::size_t i = 0; i < exprs.size(); ++i)
      rules << "      - record: dashboard:query" << i << "\n        expr: " << yaml_quoted(exprs[i])
            << "\n";
  }
  const std::string cmd = "promtool check rules " + (dir / "rules.yml").string() + " > "
                          + (dir / "out.txt").string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in{dir / "out.txt"};
  std::string out{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  fs::remove_all(dir);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out};
}

TEST(Dashboards, EveryExpressionParsesWithPromtool) {
  // Prometheus's own parser (promtool of the Debian prometheus package, as in
  // scripts/install-deps.sh) on every query, variables substituted.
  std::vector<std::string> exprs;
  for (const auto& q : dashboard_queries(dashboards_dir.string()))
    exprs.push_back(q.expr);
  ASSERT_FALSE(exprs.empty());
  const auto [rc, out] = promtool_check(exprs, "good");
  // promtool is a dependency (scripts/install-deps.sh installs prometheus):
  // its absence is a broken set-up, not a reason to skip.
  ASSERT_NE(rc, -1) << "promtool not installed: run scripts/install-deps.sh";
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("SUCCESS: " + std::to_string(exprs.size()) + " rules found"),
            std::string::npos)
      << out;
  // And promtool does reject a broken query.
  const auto [bad_rc, bad_out] =
      promtool_check({"sum by (job (rate(nettorrent_epoch[5s]))"}, "bad");
  EXPECT_NE(bad_rc, 0) << bad_out;
}

// --- the helpers and checkers themselves ---------------------------------------

TEST(DashboardQueries, SubstitutesEveryGrafanaSyntax) {
  using integration::substitute_grafana_variables;
  EXPECT_EQ(
      substitute_grafana_variables(
          R"(rate(x{swarm="$swarm", job=~"${job:regex}"}[$__rate_interval]) + [[swarm]] $__interval $__range)"),
      R"(rate(x{swarm="1", job=~".+"}[5s]) + 1 1s 1m)");
  // $__rate_interval is not $__range + "te_interval"; a literal $ is kept.
  EXPECT_EQ(substitute_grafana_variables("a$__range b$ c$"), "a1m b$ c$");
  EXPECT_THROW(substitute_grafana_variables("x{a=\"$nope\"}"), std::runtime_error);
  EXPECT_THROW(substitute_grafana_variables("$__interval_ms"), std::runtime_error);
  EXPECT_THROW(substitute_grafana_variables("${node}"), std::runtime_error);
}

TEST(PromqlChecker, AcceptsGoodExpressionsAndNamesWhatIsWrong) {
  EXPECT_TRUE(
      check_promql(
          R"(histogram_quantile(0.9, sum by (job, le) (rate(nettorrent_forward_seconds_bucket{job=~".+", swarm="1"}[5s]))))")
          .empty());
  EXPECT_TRUE(
      check_promql(
          R"(sum by (job, le) (rate(nettorrent_update_staleness_bucket{swarm="1"}[5s])) / ignoring (le) group_left sum by (job) (rate(nettorrent_update_staleness_count{swarm="1"}[5s])))")
          .empty());
  EXPECT_TRUE(
      check_promql("max by (job, replica) (nettorrent_validation_accuracy) > bool 0.5").empty());

  auto has = [](const std::vector<std::string>& v, const std::string& what) {
    for (const auto& s : v)
      if (s.find(what) != std::string::npos)
        return true;
    return false;
  };
  auto p = check_promql(R"(sum(rate(nettorrent_sample_total{swarm="1"}[5s])))");
  EXPECT_TRUE(has(p, "unknown metric nettorrent_sample_total")) << lines(p);
  p = check_promql(R"(nettorrent_peers_alive{replica="0"})");
  EXPECT_TRUE(has(p, "has no label replica")) << lines(p);
  p = check_promql(R"(sum by (kind) (nettorrent_epoch))");
  EXPECT_TRUE(has(p, "grouping by kind")) << lines(p);
  p = check_promql(R"(histogram_quantil(0.5, nettorrent_forward_seconds_bucket))");
  EXPECT_TRUE(has(p, "unknown function histogram_quantil()")) << lines(p);
  p = check_promql(
      R"(histogram_quantile(0.5, sum by (job) (rate(nettorrent_forward_seconds_bucket[5s]))))");
  EXPECT_TRUE(has(p, "aggregated by le")) << lines(p);
  p = check_promql("nettorrent_forward_seconds"); // a histogram has no plain series
  EXPECT_TRUE(has(p, "unknown metric nettorrent_forward_seconds")) << lines(p);
  p = check_promql("nettorrent_epoch_bucket"); // a gauge has no buckets
  EXPECT_TRUE(has(p, "unknown metric nettorrent_epoch_bucket")) << lines(p);
  p = check_promql(R"({__name__="nettorrent_epoch"})");
  EXPECT_TRUE(has(p, "without a metric name")) << lines(p);
  p = check_promql("sum(rate(nettorrent_samples_total[5s])");
  EXPECT_TRUE(has(p, "unbalanced")) << lines(p);
  p = check_promql("up");
  EXPECT_TRUE(has(p, "unknown metric up")) << lines(p);
}

/// A one-panel dashboard; `panel_ds`, `target_ds` and `expr` are spliced in.
std::string fixture(const std::string& expr,
                    const std::string& panel_ds = R"({"type":"prometheus","uid":"ds"})",
                    const std::string& target_ds = R"({"type":"prometheus","uid":"ds"})",
                    const std::string& extra_panel = "") {
  std::string e;
  for (char c : expr)
    e += c == '"' ? std::string("\\\"") : std::string(1, c);
  return R"J({"uid":"u","title":"t","schemaVersion":38,
    "templating":{"list":[{"name":"swarm","type":"query","datasource":{"type":"prometheus","uid":"ds"},
      "query":"label_values(nettorrent_samples_total, swarm)",
      "definition":"label_values(nettorrent_samples_total, swarm)","current":{"value":"$__all"}}]},
    "panels":[{"id":1,"type":"timeseries","title":"p","gridPos":{"x":0,"y":0,"w":12,"h":8},
      "datasource":)J"
         + panel_ds + R"J(,
      "targets":[{"refId":"A","datasource":)J"
         + target_ds + R"J(,"expr":")J" + e + R"J("}]})J" + extra_panel + "]}";
}

TEST(DashboardChecker, AcceptsAGoodDashboardAndRejectsEachKindOfMistake) {
  const std::set<std::string> uids{"ds"};
  auto has = [](const std::vector<std::string>& v, const std::string& what) {
    for (const auto& s : v)
      if (s.find(what) != std::string::npos)
        return true;
    return false;
  };
  const std::string good =
      R"(sum(rate(nettorrent_samples_total{swarm="$swarm"}[$__rate_interval])))";
  auto p = check_dashboard(parse(fixture(good)), uids);
  EXPECT_TRUE(p.empty()) << lines(p);

  // Wrong uid on a target; a datasource given by name; none on the panel.
  p = check_dashboard(parse(fixture(good, R"({"type":"prometheus","uid":"ds"})",
                                    R"({"type":"prometheus","uid":"other"})")),
                      uids);
  EXPECT_TRUE(has(p, "$.panels[0].targets[0].datasource")) << lines(p);
  p = check_dashboard(parse(fixture(good, R"("Prometheus")")), uids);
  EXPECT_TRUE(has(p, "$.panels[0].datasource: not a {type, uid} object")) << lines(p);
  p = check_dashboard(parse(fixture(good, "null")), uids);
  EXPECT_TRUE(has(p, "$.panels[0].datasource")) << lines(p);
  // The datasource of a template variable is checked too.
  p = check_dashboard(parse(fixture(good)), {"elsewhere"});
  EXPECT_TRUE(has(p, "$.templating.list[0].datasource")) << lines(p);

  // An undefined variable, in an expression and in a title.
  p = check_dashboard(parse(fixture(R"(nettorrent_epoch{node="$node"})")), uids);
  EXPECT_TRUE(has(p, "$node is not defined")) << lines(p);
  auto d = parse(fixture(good));
  d["panels"][0]["title"].SetString("Swarm ${layer}");
  p = check_dashboard(d, uids);
  EXPECT_TRUE(has(p, "$layer is not defined")) << lines(p);

  // A metric that is not ours.
  p = check_dashboard(parse(fixture(R"(rate(node_cpu_seconds_total[$__rate_interval]))")), uids);
  EXPECT_TRUE(has(p, "unknown metric node_cpu_seconds_total")) << lines(p);

  // Overlapping panels, a duplicate id, a panel off the grid.
  p = check_dashboard(
      parse(fixture(good, R"({"type":"prometheus","uid":"ds"})",
                    R"({"type":"prometheus","uid":"ds"})",
                    R"(,{"id":1,"type":"stat","title":"q","gridPos":{"x":6,"y":4,"w":20,"h":4},
                                        "datasource":{"type":"prometheus","uid":"ds"},
                                        "targets":[{"refId":"A","datasource":{"type":"prometheus","uid":"ds"},"expr":"nettorrent_epoch"}]})")),
      uids);
  EXPECT_TRUE(has(p, "overlaps panel")) << lines(p);
  EXPECT_TRUE(has(p, "duplicate id")) << lines(p);
  EXPECT_TRUE(has(p, "outside the 24-column grid")) << lines(p);

  // A template query about an unknown metric.
  d = parse(fixture(good));
  d["templating"]["list"][0]["query"].SetString("label_values(nettorrent_swarms, swarm)");
  p = check_dashboard(d, uids);
  EXPECT_TRUE(has(p, "unknown metric nettorrent_swarms")) << lines(p);
  d["templating"]["list"][0]["query"].SetString("label_values(nettorrent_epoch, swarm)");
  p = check_dashboard(d, uids);
  EXPECT_TRUE(has(p, "nettorrent_epoch has no label swarm")) << lines(p);
}

TEST(DashboardChecker, ReadsTheProvisionedUidFromYaml) {
  const fs::path dir = fs::temp_directory_path() / ("nettorrent-ds-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream{dir / "a.yaml"}
      << "apiVersion: 1\n# uid: commented-out\ndatasources:\n"
         "  - name: x\n    uid: \"quoted-uid\"   # the uid\n    type: prometheus\n";
  std::ofstream{dir / "b.yml"} << "datasources:\n  - uid: plain-uid # comment\n";
  std::ofstream{dir / "c.txt"} << "uid: not-yaml\n";
  const auto v = yaml_values(dir, "uid");
  fs::remove_all(dir);
  EXPECT_EQ(std::set<std::string>(v.begin(), v.end()),
            (std::set<std::string>{"quoted-uid", "plain-uid"}));
}

} // namespace
