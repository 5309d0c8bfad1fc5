// Deployment pieces, really run: scripts/make-certs.sh (checked with
// openssl verify), `cmake --install` of this build into a temp prefix, and
// `cpack -G DEB` (checked with dpkg-deb).
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;

namespace {

const std::string source_dir = NETTORRENT_SOURCE_DIR;
const std::string build_dir = NETTORRENT_BUILD_DIR;

/// Runs a shell command; returns its exit status, output in `out`.
int sh(const std::string& cmd, std::string& out, const std::string& log) {
  const int status = std::system((cmd + " >" + log + " 2>&1").c_str());
  out = test_support::read_file(log);
  return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class Deploy : public ::testing::Test {
protected:
  Deploy() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path()
          / ("nettorrent-deploy-" + std::string{info->name()} + "-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Deploy() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& n) const { return (dir / n).string(); }
  int run(const std::string& cmd, std::string& out) { return sh(cmd, out, path("log.txt")); }
  fs::path dir;
};

TEST_F(Deploy, MakeCertsMakesACaAndAVerifiableCertificatePerNode) {
  std::string out;
  ASSERT_EQ(run(source_dir + "/scripts/make-certs.sh " + path("certs") + " n0 n1 n2", out), 0) << out;
  for (const std::string n : {"n0", "n1", "n2"}) {
    EXPECT_EQ(run("openssl verify -CAfile " + path("certs/ca.pem") + " " + path("certs/" + n + ".pem"),
                  out),
              0)
        << out;
    EXPECT_CONTAINS(out, ": OK");
    EXPECT_EQ(run("openssl x509 -noout -subject -in " + path("certs/" + n + ".pem"), out), 0);
    EXPECT_CONTAINS(out, "CN = " + n);
    struct stat st {};
    ASSERT_EQ(::stat(path("certs/" + n + "-key.pem").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << n << "'s key is readable by others";
  }
  // A certificate of another CA does not verify against this one.
  ASSERT_EQ(run(source_dir + "/scripts/make-certs.sh " + path("other") + " n0", out), 0) << out;
  EXPECT_NE(run("openssl verify -CAfile " + path("certs/ca.pem") + " " + path("other/n0.pem"), out),
            0);
  // Existing files are never overwritten; bad node ids are refused.
  EXPECT_EQ(run(source_dir + "/scripts/make-certs.sh " + path("certs") + " n3", out), 2);
  EXPECT_CONTAINS(out, "exists already");
  EXPECT_EQ(run(source_dir + "/scripts/make-certs.sh " + path("x") + " 'a b'", out), 2);
  EXPECT_CONTAINS(out, "may hold only");
}

TEST_F(Deploy, InstallPutsTheBinaryConfigsDashboardsScriptsAndTheUnitInPlace) {
  std::string out;
  ASSERT_EQ(run("cmake --install " + build_dir + " --prefix " + path("prefix"), out), 0) << out;
  for (const std::string f :
       {"bin/nettorrent", "share/nettorrent/config/local.ini",
        "share/nettorrent/config/cluster/cluster.ini", "share/nettorrent/config/prometheus.yml",
        "share/nettorrent/grafana/dashboards/overview.json",
        "share/nettorrent/grafana/provisioning/datasources/nettorrent.yaml",
        "share/nettorrent/scripts/launch-cluster.sh", "share/nettorrent/scripts/make-certs.sh",
        "share/doc/nettorrent/README.md", "share/doc/nettorrent/docs/cluster.md",
        "lib/systemd/system/nettorrent-node@.service"})
    EXPECT_TRUE(fs::is_regular_file(path("prefix/" + f))) << f;
  // The installed binary runs.
  EXPECT_EQ(run(path("prefix/bin/nettorrent") + " --version", out), 0) << out;
  EXPECT_CONTAINS(out, "CAF 0.17");
  const std::string unit = test_support::read_file(path("prefix/lib/systemd/system/nettorrent-node@.service"));
  EXPECT_CONTAINS(unit, "ExecStart=/usr/bin/nettorrent node --config-file=/etc/nettorrent/%i.ini");
}

TEST_F(Deploy, CpackBuildsADebianPackage) {
  std::string out;
  ASSERT_EQ(run("cd " + dir.string() + " && cpack --config " + build_dir
                    + "/CPackConfig.cmake -G DEB -B " + path("pkg"),
                out),
            0)
      << out;
  std::string deb;
  for (const auto& e : fs::directory_iterator(path("pkg")))
    if (e.path().extension() == ".deb")
      deb = e.path().string();
  ASSERT_FALSE(deb.empty()) << out;
  ASSERT_EQ(run("dpkg-deb -c " + deb, out), 0) << out;
  EXPECT_CONTAINS(out, "./usr/bin/nettorrent");
  EXPECT_CONTAINS(out, "./usr/lib/systemd/system/nettorrent-node@.service");
  EXPECT_CONTAINS(out, "./usr/share/nettorrent/config/cluster/cluster.ini");
  ASSERT_EQ(run("dpkg-deb -I " + deb, out), 0) << out;
  EXPECT_CONTAINS(out, "Package: nettorrent");
  EXPECT_CONTAINS(out, "libcaf"); // shared-library dependencies were found
}

} // namespace
