// The learning-curve plot: drawn by gnuplot, atomically; a missing gnuplot
// is a warning, a bad curve an error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "nettorrent/error.hpp"
#include "nettorrent/plot.hpp"
#include "nettorrent/run_support.hpp"

namespace nt = nettorrent;
namespace fs = std::filesystem;

namespace {

class Plot : public ::testing::Test {
protected:
  Plot() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path()
          / ("nettorrent-plot-" + std::to_string(::getpid()) + "-" + info->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    csv = (dir / "curve.csv").string();
    png = (dir / "curve.png").string();
    std::vector<nt::curve_point> curve;
    for (int i = 1; i <= 5; ++i)
      curve.push_back(
          {1, static_cast<std::uint64_t>(i) * 1000, 0.1 * i, 1.0 / i, 1.2 / i, 0.5 + 0.05 * i});
    nt::write_curve_csv(csv, curve);
  }
  ~Plot() override { fs::remove_all(dir); }

  fs::path dir;
  std::string csv;
  std::string png;
};

TEST_F(Plot, DrawsAPngNextToTheCurve) {
  std::ostringstream warn;
  ASSERT_TRUE(nt::plot_curve(csv, png, warn)) << warn.str();
  std::ifstream in{png, std::ios::binary};
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_GT(fs::file_size(png), 1000u);
  // Nothing else is left behind: no script, no temp image.
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 2u);
}

TEST_F(Plot, AMissingGnuplotIsAWarningNotAnError) {
  const std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  ::setenv("PATH", "/nonexistent", 1);
  std::ostringstream warn;
  bool plotted = true;
  EXPECT_NO_THROW(plotted = nt::plot_curve(csv, png, warn));
  ::setenv("PATH", path.c_str(), 1);
  EXPECT_FALSE(plotted);
  EXPECT_NE(warn.str().find("gnuplot"), std::string::npos) << warn.str();
  EXPECT_FALSE(fs::exists(png));
}

TEST_F(Plot, AMissingOrForeignCurveIsAnError) {
  std::ostringstream warn;
  EXPECT_THROW(nt::plot_curve((dir / "nope.csv").string(), png, warn), nt::error);
  const std::string foreign = (dir / "foreign.csv").string();
  std::ofstream{foreign} << "a,b,c\n1,2,3\n";
  try {
    nt::plot_curve(foreign, png, warn);
    ADD_FAILURE() << "a foreign CSV was plotted";
  } catch (const nt::error& e) {
    EXPECT_NE(std::string{e.what()}.find(foreign), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(png));
}

} // namespace
