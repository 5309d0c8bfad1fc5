// Facts about the code's shape that a reader can check, checked here:
// apps/ reach no CAF header (directly or through any header they include),
// libnettorrent's headers include no CAF, and FNV-1a is written once.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path source_dir{NETTORRENT_SOURCE_DIR};

/// The project's include directories, in the order the build searches them.
const std::vector<fs::path>& include_dirs() {
  static const std::vector<fs::path> dirs{source_dir / "libnettorrent", source_dir / "actors",
                                          source_dir / "apps"};
  return dirs;
}

/// Every `#include` of `file`: quoted ones resolved against the file's own
/// folder and the include directories, angle-bracket ones kept as written.
void includes_of(const fs::path& file, std::vector<fs::path>& local,
                 std::vector<std::string>& system) {
  std::ifstream in{file};
  static const std::regex inc{R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])"};
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, inc))
      continue;
    const std::string name = m[2];
    if (m[1] == "<") {
      system.push_back(name);
      continue;
    }
    std::vector<fs::path> candidates{file.parent_path() / name};
    for (const auto& d : include_dirs())
      candidates.push_back(d / name);
    for (const auto& c : candidates)
      if (fs::is_regular_file(c)) {
        local.push_back(fs::canonical(c));
        break;
      }
  }
}

/// The first system header matching `bad` reached from `root`, with the
/// chain of project files that leads to it; empty if none.
std::string reaches(const fs::path& root, const std::regex& bad) {
  std::vector<std::pair<fs::path, std::string>> todo{{fs::canonical(root), root.string()}};
  std::set<fs::path> seen;
  while (!todo.empty()) {
    auto [file, chain] = todo.back();
    todo.pop_back();
    if (!seen.insert(file).second)
      continue;
    std::vector<fs::path> local;
    std::vector<std::string> system;
    includes_of(file, local, system);
    for (const auto& s : system)
      if (std::regex_search(s, bad))
        return chain + " -> <" + s + ">";
    for (const auto& l : local)
      todo.emplace_back(l, chain + " -> " + fs::relative(l, source_dir).string());
  }
  return {};
}

std::vector<fs::path> files_under(const fs::path& dir, const std::set<std::string>& exts) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && exts.count(e.path().extension().string()) != 0)
      out.push_back(e.path());
  return out;
}

TEST(Structure, AppsReachNoCafHeader) {
  const std::regex caf{R"(^caf/)"};
  const auto apps = files_under(source_dir / "apps", {".cpp", ".hpp"});
  ASSERT_FALSE(apps.empty());
  for (const auto& f : apps)
    EXPECT_EQ(reaches(f, caf), "") << "an app includes CAF";
}

TEST(Structure, TheScanSeesCafWhereItIs) {
  // The check above can fail: the coordinator's header does reach CAF.
  const std::regex caf{R"(^caf/)"};
  EXPECT_NE(reaches(source_dir / "actors" / "coordinator.hpp", caf), "");
}

TEST(Structure, LibnettorrentHeadersIncludeNoCafOrPrometheus) {
  const std::regex bad{R"(^(caf|prometheus)/)"};
  for (const auto& f : files_under(source_dir / "libnettorrent", {".hpp", ".cpp"}))
    EXPECT_EQ(reaches(f, bad), "");
}

TEST(Structure, FnvOneAIsWrittenOnce) {
  // The FNV-1a 64 prime, as code, appears in exactly one source file.
  std::vector<std::string> holders;
  for (const auto& dir : {"libnettorrent", "actors", "apps", "bench"})
    for (const auto& f : files_under(source_dir / dir, {".cpp", ".hpp"})) {
      std::ifstream in{f};
      const std::string text{std::istreambuf_iterator<char>{in}, {}};
      if (text.find("0x100000001b3ULL") != std::string::npos)
        holders.push_back(fs::relative(f, source_dir).string());
    }
  ASSERT_EQ(holders.size(), 1u) << "FNV-1a in " << ::testing::PrintToString(holders);
  EXPECT_EQ(holders[0], "libnettorrent/src/hash.cpp");
}

} // namespace
