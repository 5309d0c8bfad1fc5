#include "nettorrent/ini.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "nettorrent/error.hpp"

namespace nettorrent {

const char* to_string(ini_value::type t) noexcept {
  switch (t) {
  case ini_value::type::boolean:
    return "boolean";
  case ini_value::type::integer:
    return "integer";
  case ini_value::type::real:
    return "real number";
  case ini_value::type::string:
    return "string";
  case ini_value::type::atom:
    return "atom";
  case ini_value::type::duration:
    return "duration";
  case ini_value::type::list:
    return "list";
  }
  return "?";
}

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos)
    return {};
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Cursor over one value's text.
class value_parser {
public:
  explicit value_parser(const std::string& text) : s_(text) {}

  ini_value parse_all() {
    ini_value v = parse();
    skip_ws();
    if (pos_ != s_.size())
      fail("unexpected text \"" + s_.substr(pos_) + "\" after the value");
    return v;
  }

private:
  [[noreturn]] void fail(const std::string& what) const { throw error(what); }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t'))
      ++pos_;
  }

  ini_value parse() {
    skip_ws();
    if (pos_ >= s_.size())
      fail("missing value");
    const char c = s_[pos_];
    if (c == '"')
      return parse_quoted('"', ini_value::type::string);
    if (c == '\'')
      return parse_quoted('\'', ini_value::type::atom);
    if (c == '[')
      return parse_list();
    return parse_bare();
  }

  ini_value parse_quoted(char quote, ini_value::type kind) {
    ++pos_;
    ini_value v;
    v.kind = kind;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      char c = s_[pos_++];
      if (c == '\\') {
        if (pos_ >= s_.size())
          break;
        const char e = s_[pos_++];
        switch (e) {
        case 'n':
          c = '\n';
          break;
        case 't':
          c = '\t';
          break;
        case '\\':
        case '"':
        case '\'':
          c = e;
          break;
        default:
          fail(std::string{"unknown escape \\"} + e + " in a quoted value");
        }
      }
      v.text.push_back(c);
    }
    if (pos_ >= s_.size())
      fail(std::string{"unterminated "} + (quote == '"' ? "string" : "atom") + " (missing closing "
           + quote + ")");
    ++pos_;
    return v;
  }

  ini_value parse_list() {
    ++pos_;
    ini_value v;
    v.kind = ini_value::type::list;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      v.list.push_back(parse());
      skip_ws();
      if (pos_ >= s_.size())
        fail("unterminated list (missing ])");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        return v;
      }
      fail(std::string{"expected , or ] in a list, found '"} + s_[pos_] + "'");
    }
  }

  ini_value parse_bare() {
    const auto start = pos_;
    while (pos_ < s_.size() && s_[pos_] != ',' && s_[pos_] != ']' && s_[pos_] != ' '
           && s_[pos_] != '\t')
      ++pos_;
    const std::string tok = s_.substr(start, pos_ - start);
    ini_value v;
    v.text = tok;
    if (tok == "true" || tok == "false") {
      v.kind = ini_value::type::boolean;
      v.boolean = tok == "true";
      return v;
    }
    if (!tok.empty()
        && (std::isdigit(static_cast<unsigned char>(tok[0])) != 0 || tok[0] == '-' || tok[0] == '+'
            || tok[0] == '.')) {
      errno = 0;
      char* end = nullptr;
      const long long i = std::strtoll(tok.c_str(), &end, 10);
      if (errno == 0 && *end == '\0') {
        v.kind = ini_value::type::integer;
        v.integer = i;
        v.real = static_cast<double>(i);
        return v;
      }
      errno = 0;
      const double d = std::strtod(tok.c_str(), &end);
      const std::string unit = end;
      if (errno == 0 && unit.empty()) {
        v.kind = ini_value::type::real;
        v.real = d;
        return v;
      }
      static const std::pair<const char*, double> units[] = {
          {"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"min", 60e9}, {"h", 3600e9}};
      for (const auto& [name, scale] : units) {
        if (unit == name && errno == 0 && end != tok.c_str()) {
          v.kind = ini_value::type::duration;
          v.nanoseconds = static_cast<std::int64_t>(d * scale);
          v.real = d * scale / 1e9;
          return v;
        }
      }
      fail("malformed number \"" + tok + "\"");
    }
    fail("unquoted text \"" + tok
         + "\" (strings need double quotes, atoms single quotes; booleans are true/false)");
  }

  const std::string& s_;
  std::size_t pos_ = 0;
};

// Removes a trailing `; comment` that is outside quotes.
std::string strip_comment(const std::string& line) {
  char quote = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote != 0) {
      if (c == '\\')
        ++i;
      else if (c == quote)
        quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == ';' || c == '#') {
      return line.substr(0, i);
    }
  }
  return line;
}

bool valid_name(const std::string& s) {
  if (s.empty())
    return false;
  for (char c : s)
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_' && c != '-' && c != '.')
      return false;
  return true;
}

} // namespace

ini_value parse_ini_value(const std::string& text) {
  return value_parser{text}.parse_all();
}

ini_document parse_ini_text(const std::string& text, const std::string& path) {
  ini_document doc;
  doc.path = path;
  std::istringstream in{text};
  std::string raw;
  std::string section;
  std::set<std::string> seen;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string origin = path + ":" + std::to_string(line_no);
    const std::string line = trim(strip_comment(raw));
    if (line.empty())
      continue;
    if (line.front() == '[') {
      if (line.back() != ']')
        throw error(origin + ": malformed section header \"" + line + "\" (missing ])");
      section = trim(line.substr(1, line.size() - 2));
      if (!valid_name(section))
        throw error(origin + ": invalid section name \"" + section + "\"");
      continue;
    }
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      throw error(origin + ": expected key=value or [section], found \"" + line + "\"");
    ini_entry e;
    e.section = section;
    e.key = trim(line.substr(0, eq));
    e.origin = origin;
    if (!valid_name(e.key))
      throw error(origin + ": invalid key name \"" + e.key + "\"");
    try {
      e.value = parse_ini_value(trim(line.substr(eq + 1)));
    } catch (const error& ex) {
      throw error(origin + ": " + e.name() + ": " + ex.what());
    }
    if (!seen.insert(e.name()).second)
      throw error(origin + ": " + e.name() + " is set twice");
    doc.entries.push_back(std::move(e));
  }
  return doc;
}

ini_document parse_ini_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw error(path + ": cannot open config file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad())
    throw error(path + ": cannot read config file");
  return parse_ini_text(ss.str(), path);
}

} // namespace nettorrent
