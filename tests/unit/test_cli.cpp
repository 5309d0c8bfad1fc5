// The `nettorrent` command line: exit codes and error messages of the real
// binary. Successful training runs are in test_training.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/data.hpp"

namespace nt = nettorrent;
using test_support::read_file;
namespace fs = std::filesystem;

namespace {

const std::string cli = NETTORRENT_CLI;
const std::string local_ini = std::string{NETTORRENT_SOURCE_DIR} + "/config/local.ini";

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

struct cli_result {
  int code = -1;      ///< exit status, -1 if the process did not exit normally
  std::string out;    ///< stdout
  std::string err;    ///< stderr
  std::string output; ///< out, then err
};

// Runs the binary with `args` (each quoted for the shell).
cli_result run_cli(const std::vector<std::string>& args) {
  static std::atomic<int> counter{0};
  const std::string stem = (fs::temp_directory_path()
                            / ("nettorrent-test_cli-out-" + std::to_string(::getpid()) + "-"
                               + std::to_string(counter++)))
                               .string();
  std::string cmd = quote(cli);
  for (const auto& a : args)
    cmd += " " + quote(a);
  cmd += " >" + quote(stem + ".out") + " 2>" + quote(stem + ".err") + " </dev/null";
  const int status = std::system(cmd.c_str());
  cli_result r;
  if (status != -1 && WIFEXITED(status))
    r.code = WEXITSTATUS(status);
  r.out = read_file(stem + ".out");
  r.err = read_file(stem + ".err");
  r.output = r.out + r.err;
  fs::remove(stem + ".out");
  fs::remove(stem + ".err");
  return r;
}

class Cli : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path()
           / ("nettorrent-test_cli-" + std::string{info->name()} + "-" + std::to_string(::getpid())
              + "-" + std::to_string(counter++));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream os{path(name), std::ios::binary};
    os << text;
    return path(name);
  }
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir_))
      out.push_back(fs::relative(e.path(), dir_).string());
    std::sort(out.begin(), out.end());
    return out;
  }
  // An untrained model of the given shape, saved as a checkpoint.
  std::string untrained_checkpoint(const std::string& name, std::vector<std::size_t> layers) {
    nt::model_config m;
    m.layers = layers;
    nt::optimizer_config opt;
    nt::centralised_trainer trainer{m, opt, 1};
    nt::model_checkpoint ck;
    ck.header.layers.assign(layers.begin(), layers.end());
    for (const auto& g : trainer.geometry())
      ck.header.activations.push_back(g.act);
    ck.layers = trainer.layers();
    nt::save_checkpoint(path(name), ck);
    return path(name);
  }

  fs::path dir_;
};

TEST_F(Cli, NoArgumentsPrintsUsageAndExitsTwo) {
  const cli_result r = run_cli({});
  EXPECT_EQ(r.code, 2);
  EXPECT_CONTAINS(r.output, "usage: nettorrent <command>");
  EXPECT_CONTAINS(r.output, "centralised");
  EXPECT_CONTAINS(r.output, "evaluate");
}

TEST_F(Cli, HelpExitsZero) {
  for (const char* h : {"help", "--help", "-h"}) {
    SCOPED_TRACE(h);
    const cli_result r = run_cli({h});
    EXPECT_EQ(r.code, 0);
    EXPECT_CONTAINS(r.out, "usage: nettorrent <command>");
    for (const char* cmd : {"train", "node", "centralised", "evaluate", "plot", "keys", "version"})
      EXPECT_CONTAINS(r.out, std::string{"\n  "} + cmd);
  }
}

TEST_F(Cli, UnknownCommandFails) {
  const cli_result r = run_cli({"frobnicate", "--training.max_epochs=1"});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.code, 2);
  EXPECT_CONTAINS(r.output, "unknown command \"frobnicate\"");
  EXPECT_CONTAINS(r.output, "usage:");
}

TEST_F(Cli, EveryCommandHasItsOwnHelp) {
  // Each command's help goes to stdout, exits 0, shows its usage line and
  // names its key option; -h and --help anywhere after the command.
  const std::vector<std::pair<std::string, std::string>> key_option = {
      {"train", "--config-file=FILE"},       {"node", "--config-file=NODE_FILE"},
      {"centralised", "--config-file=FILE"}, {"evaluate", "--checkpoint=FILE"},
      {"plot", "--curve=CURVE_CSV"},         {"keys", "type, default and meaning"},
      {"plan", "--bandwidth=LIST"},
      {"help", "nettorrent help evaluate"},  {"version", "nettorrent --version"}};
  for (const auto& [cmd, option] : key_option) {
    for (const char* flag : {"--help", "-h"}) {
      SCOPED_TRACE(cmd + " " + flag);
      const cli_result r = run_cli({cmd, flag});
      EXPECT_EQ(r.code, 0) << r.output;
      EXPECT_CONTAINS(r.out, "usage: nettorrent " + cmd);
      EXPECT_CONTAINS(r.out, option);
      EXPECT_CONTAINS(r.out, "example:");
      EXPECT_EQ(r.err, "");
    }
  }
  // After other arguments too, and without running anything.
  cli_result r = run_cli({"train", "--config-file=" + path("missing.ini"), "--help"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.out, "usage: nettorrent train");
  // The alias, and `help COMMAND`.
  r = run_cli({"centralized", "--help"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.out, "usage: nettorrent centralised");
  r = run_cli({"help", "evaluate"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.out, "--checkpoint=FILE");
  EXPECT_CONTAINS(r.out, "--data.test_limit=N");
  r = run_cli({"--help", "plot"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.out, "--out=PNG");
}

TEST_F(Cli, HelpOfAnUnknownCommandExitsTwo) {
  cli_result r = run_cli({"help", "frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_CONTAINS(r.err, "unknown command \"frobnicate\"");
  r = run_cli({"frobnicate", "--help"});
  EXPECT_EQ(r.code, 2);
  EXPECT_CONTAINS(r.err, "unknown command \"frobnicate\"");
  EXPECT_EQ(r.out, "");
}

TEST_F(Cli, VersionNamesNetTorrentCafEigenAndTheCompiler) {
  for (const char* v : {"--version", "version"}) {
    SCOPED_TRACE(v);
    const cli_result r = run_cli({v});
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_CONTAINS(r.out, "nettorrent " NETTORRENT_VERSION "\n");
    EXPECT_CONTAINS(r.out, "CAF 0.17.");
    EXPECT_CONTAINS(r.out, "Eigen 3.4.");
    EXPECT_CONTAINS(r.out, "compiler ");
    EXPECT_EQ(r.err, "");
  }
}

TEST_F(Cli, KeysListsEveryKey) {
  const cli_result r = run_cli({"keys"});
  EXPECT_EQ(r.code, 0);
  for (const char* k : {"model.layers", "data.dir", "training.batch_size", "training.output_dir",
                        "optimizer.kind", "optimizer.epsilon"})
    EXPECT_CONTAINS(r.output, k);
}

TEST_F(Cli, CentralisedWithAnUnknownKeyNamesFileLineAndKey) {
  const std::string ini = write("bad.ini", "[training]\nbatch_size = 32\nbatchsize = 3\n");
  const cli_result r = run_cli({"centralised", "--config-file=" + ini});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, ini + ":3");
  EXPECT_CONTAINS(r.output, "training.batchsize");
  EXPECT_CONTAINS(r.output, "nettorrent centralised: error:");
  EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
  EXPECT_EQ(listing(), (std::vector<std::string>{"bad.ini"}));
}

TEST_F(Cli, CentralisedWithAWronglyTypedValue) {
  const std::string ini = write("typed.ini", "[optimizer]\nlearning_rate = \"fast\"\n");
  const cli_result r = run_cli({"centralised", "--config-file=" + ini});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, ini + ":2");
  EXPECT_CONTAINS(r.output, "optimizer.learning_rate");
  EXPECT_CONTAINS(r.output, "expected a number");
}

TEST_F(Cli, CentralisedWithAMissingConfigFileOrBadArgument) {
  cli_result r = run_cli({"centralised", "--config-file=" + path("missing.ini")});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, path("missing.ini"));
  r = run_cli({"centralised", "--config-file=" + local_ini, "max_epochs=3"});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, "unexpected argument \"max_epochs=3\"");
}

TEST_F(Cli, EveryCommandRefusesASecondConfigFile) {
  for (const char* cmd : {"centralised", "train", "node"}) {
    SCOPED_TRACE(cmd);
    const cli_result r =
        run_cli({cmd, "--config-file=" + local_ini, "--config-file=" + path("other.ini")});
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_CONTAINS(r.output, "--config-file given twice");
  }
  const cli_result r = run_cli({"node", "--config-file="});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, "needs a path");
}

TEST_F(Cli, PlanPredictsEveryPlacementAndNamesBadFlags) {
  const std::string hosts = std::string{NETTORRENT_SOURCE_DIR} + "/config/hosts/cluster.ini";
  cli_result r = run_cli({"plan", "--config-file=" + hosts, "--bandwidth=1000,n1:100"});
  EXPECT_EQ(r.code, 0) << r.output;
  for (const char* s : {"plan: 3 nodes, 3 replicas, 3 swarms", "n1 at 100", "round_robin ",
                        "by_swarm ", "by_replica ", "samples/s  bottleneck: "})
    EXPECT_CONTAINS(r.out, s);
  // Nodes that share a machine: a fraction of a core each.
  r = run_cli({"plan", "--config-file=" + hosts, "--cores=0.67", "--bandwidth=100"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_CONTAINS(r.out, "cores 0.67 at");
  const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
      {{"plan"}, "--config-file=CLUSTER (a cluster file) is required"},
      {{"plan", "--config-file=" + hosts, "--bandwidth=fast"}, "\"fast\" is not ID:RATE or RATE"},
      {{"plan", "--config-file=" + hosts, "--bandwidth=n5:10"}, "no node \"n5\""},
      {{"plan", "--config-file=" + hosts, "--nodes=0"}, "--nodes=0: expected a whole number"},
      {{"plan", "--config-file=" + hosts, "--config-file=" + hosts}, "--config-file given twice"},
      {{"plan", "--config-file=" + hosts, "--speed=3"}, "unexpected argument \"--speed=3\""},
      {{"plan", "--config-file=" + hosts, "--cores=0"}, "--cores=0: expected a number of cores"},
      {{"plan", "--config-file=" + hosts, "--cores=two"}, "--cores=two: expected a number"},
      {{"plan", "--config-file=" + local_ini}, "placement.strategy"},
  };
  for (const auto& [args, why] : bad) {
    r = run_cli(args);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_CONTAINS(r.err, why);
  }
}

TEST_F(Cli, EvaluateWithoutCheckpoint) {
  const cli_result r = run_cli({"evaluate"});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, "--checkpoint=FILE is required");
}

TEST_F(Cli, EvaluateRefusesAFileThatIsNoCheckpoint) {
  const std::string text = write("notes.txt", "this is not a checkpoint\n");
  const cli_result r = run_cli({"evaluate", "--checkpoint=" + text});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, text);
  EXPECT_CONTAINS(r.output, "magic");
}

TEST_F(Cli, EvaluateMissingCheckpoint) {
  const cli_result r = run_cli({"evaluate", "--checkpoint=" + path("none.ckpt")});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, path("none.ckpt"));
  EXPECT_CONTAINS(r.output, "cannot open");
}

TEST_F(Cli, EvaluateRefusesAModelOfTheWrongInputWidth) {
  const std::string ck = untrained_checkpoint("small.ckpt", {20, 16, 10});
  const cli_result r = run_cli({"evaluate", "--checkpoint=" + ck});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, ck);
  EXPECT_CONTAINS(r.output, "784 pixels");
}

TEST_F(Cli, EvaluateRefusesAModelWithTooFewClasses) {
  // Fashion-MNIST has labels 0..9; a five-class model cannot score them.
  const std::string ck = untrained_checkpoint("five.ckpt", {784, 5});
  const cli_result r = run_cli({"evaluate", "--checkpoint=" + ck, "--data.test_limit=100"});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_CONTAINS(r.output, ck);
  EXPECT_CONTAINS(r.output, "5 classes");
  EXPECT_EQ(r.output.find("confusion"), std::string::npos) << r.output;
}

TEST_F(Cli, EmptyDataDirectoryIsNamed) {
  fs::create_directory(path("empty"));
  const cli_result r =
      run_cli({"centralised", "--config-file=" + local_ini, "--data.dir=" + path("empty"),
               "--training.output_dir=" + path("out")});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, path("empty"));
  EXPECT_CONTAINS(r.output, "train-images-idx3-ubyte");
  EXPECT_EQ(listing(), (std::vector<std::string>{"empty"}));
}

TEST_F(Cli, OutputDirBelowARegularFileFailsAtOnceWithoutPartialFiles) {
  const std::string plain = write("plain", "a regular file\n");
  const std::string out = plain + "/run";
  const cli_result r =
      run_cli({"centralised", "--config-file=" + local_ini, "--data.train_limit=1000",
               "--data.test_limit=100", "--training.max_epochs=1", "--training.progress_interval=0",
               "--training.output_dir=" + out});
  EXPECT_EQ(r.code, 1);
  EXPECT_CONTAINS(r.output, out);
  EXPECT_CONTAINS(r.output, "not a directory");
  // It fails before training, not after.
  EXPECT_EQ(r.output.find("epoch 1/1"), std::string::npos) << r.output;
  EXPECT_EQ(listing(), (std::vector<std::string>{"plain"}));
  EXPECT_EQ(read_file(plain), "a regular file\n");
}

} // namespace

namespace {

TEST_F(Cli, TrainRefusesShardsSmallerThanABatch) {
  // 100 samples in 2 shards of 50 < batch 64: refused before training.
  const cli_result r = run_cli({"train", "--config-file=" + local_ini, "--data.train_limit=100",
                                "--system.metrics=false", "--training.output_dir=" + path("out")});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("topology.replicas"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("out"))) << r.output;
}

TEST_F(Cli, TrainStopsADivergingRunWithAnError) {
  // Plain SGD at learning rate 10 on a linear network sends the weights to
  // infinity within a few batches (deterministically per replica); the run must end with an error,
  // not hang, and write nothing.
  const cli_result r = run_cli({"train", "--config-file=" + local_ini, "--optimizer.kind=sgd",
                                "--optimizer.learning_rate=10", "--model.activation=identity",
                                "--topology.max_in_flight=1", "--system.metrics=false",
                                "--training.output_dir=" + path("out")});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("diverged"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("optimizer.learning_rate"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("out") + "/model.ckpt")) << r.output;
}

} // namespace

namespace {

TEST_F(Cli, TheDefaultTrainRunRepeatsBitForBit) {
  // config/local.ini's pipeline (2 replicas, max_in_flight 1) on a subset,
  // twice: the checkpoints must be byte-identical files.
  auto train = [&](const std::string& out) {
    return run_cli({"train", "--config-file=" + local_ini, "--data.train_limit=6400",
                    "--training.max_epochs=2", "--topology.sync_every=1600",
                    "--system.metrics=false", "--training.output_dir=" + path(out)});
  };
  const cli_result a = train("a");
  const cli_result b = train("b");
  ASSERT_EQ(a.code, 0) << a.output;
  ASSERT_EQ(b.code, 0) << b.output;
  auto bytes = [](const std::string& file) {
    std::ifstream in{file, std::ios::binary};
    return std::string{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  };
  const std::string ca = bytes(path("a") + "/model.ckpt");
  ASSERT_GT(ca.size(), 1000u);
  EXPECT_TRUE(ca == bytes(path("b") + "/model.ckpt")) << "two runs of the same config differ";
}

} // namespace
