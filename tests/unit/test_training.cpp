// Real training runs with fixed accuracy bars: synthetic data, a short
// Fashion-MNIST run through the library and through the command line, the
// checkpoint it writes, and early stopping at a target accuracy.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/data.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/rng.hpp"
#include "nettorrent/tensor.hpp"

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
  int code = -1;
  std::string output;
};

cli_result run_cli(const std::vector<std::string>& args, const fs::path& out) {
  std::string cmd = quote(cli);
  for (const auto& a : args)
    cmd += " " + quote(a);
  cmd += " >" + quote(out.string()) + " 2>&1 </dev/null";
  const int status = std::system(cmd.c_str());
  cli_result r;
  if (status != -1 && WIFEXITED(status))
    r.code = WEXITSTATUS(status);
  r.output = read_file(out.string());
  return r;
}

// The number printed after `label` in `text`, or -1.
double number_after(const std::string& text, const std::string& label) {
  const auto pos = text.find(label);
  if (pos == std::string::npos)
    return -1;
  return std::strtod(text.c_str() + pos + label.size(), nullptr);
}

class Training : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path()
           / ("nettorrent-test_training-" + std::string{info->name()} + "-"
              + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// A short Fashion-MNIST configuration: 10000 training samples.
nt::run_config short_fashion_run(const std::string& output_dir) {
  nt::run_config cfg;
  cfg.data.train_limit = 10000;
  cfg.training.max_epochs = 3;
  cfg.training.output_dir = output_dir;
  cfg.training.progress_interval = 0;
  cfg.validate();
  return cfg;
}

// ---------------------------------------------------------------------------

TEST_F(Training, SyntheticBlobsAreLearned) {
  nt::prepare_math_thread();
  // One draw, split into training and held-out samples (the class centres
  // depend on the seed, so both must come from the same one).
  const std::size_t n_train = 4000;
  const std::size_t n_test = 1000;
  const nt::image_set set = nt::make_synthetic(n_train + n_test, 64, 5, 0.25f, 2024);
  std::vector<std::uint32_t> train(n_train);
  std::vector<std::uint32_t> test(n_test);
  std::iota(train.begin(), train.end(), 0u);
  std::iota(test.begin(), test.end(), static_cast<std::uint32_t>(n_train));

  nt::model_config m;
  m.layers = {64, 32, 5};
  nt::optimizer_config opt;
  opt.kind = nt::optimizer_kind::adam;
  opt.learning_rate = 1e-2f;
  nt::centralised_trainer trainer{m, opt, 7};

  constexpr double threshold = 0.95;
  const nt::evaluation before =
      nt::evaluate_model(trainer.geometry(), trainer.params(), set, &test);
  EXPECT_LT(before.accuracy, 0.5) << "an untrained model should be near chance (0.2)";
  EXPECT_LT(before.accuracy, threshold);

  const std::size_t batch = 32;
  nt::matrix x;
  std::vector<std::uint8_t> labels(batch);
  nt::rng gen{11};
  std::vector<double> epoch_loss;
  for (int epoch = 0; epoch < 3; ++epoch) {
    nt::shuffle(train, gen);
    double loss = 0;
    for (std::size_t b = 0; b + batch <= train.size(); b += batch) {
      nt::gather_batch(set, train.data() + b, batch, x, labels.data());
      loss += trainer.train_batch(x, labels.data()).loss_sum;
    }
    epoch_loss.push_back(loss / static_cast<double>(train.size()));
  }
  EXPECT_LT(epoch_loss.back(), epoch_loss.front());
  EXPECT_LT(epoch_loss.back(), 0.2);

  const nt::evaluation after = nt::evaluate_model(trainer.geometry(), trainer.params(), set, &test);
  EXPECT_EQ(after.samples, n_test);
  EXPECT_GE(after.accuracy, threshold);
  EXPECT_LT(after.loss, before.loss);
  // The confusion matrix accounts for every held-out sample.
  EXPECT_EQ(std::accumulate(after.confusion.begin(), after.confusion.end(), std::size_t{0}),
            n_test);
}

TEST_F(Training, ShortFashionMnistRunPassesEightyPercent) {
  const nt::run_config cfg = short_fashion_run(path("run"));
  std::ostringstream log;
  const nt::run_result s = nt::run_centralised(cfg, log);

  EXPECT_GT(s.test.accuracy, 0.80) << log.str();
  EXPECT_EQ(s.test.samples, 10000u);
  EXPECT_EQ(s.epochs, 3u);
  EXPECT_EQ(s.samples, 3u * (10000u / 64u) * 64u);
  EXPECT_FALSE(s.reached_target);
  EXPECT_EQ(s.time_to_target, -1);
  EXPECT_GT(s.best_validation_accuracy, 0.80);
  EXPECT_CONTAINS(log.str(), "test: accuracy");

  // The checkpoint and the learning curve are where the summary says.
  EXPECT_EQ(s.checkpoint_path, path("run") + "/model.ckpt");
  EXPECT_EQ(s.curve_path, path("run") + "/curve.csv");
  ASSERT_TRUE(fs::is_regular_file(s.checkpoint_path));
  ASSERT_TRUE(fs::is_regular_file(s.curve_path));
  const std::string curve = read_file(s.curve_path);
  EXPECT_EQ(
      curve.rfind("epoch,samples,seconds,train_loss,validation_loss,validation_accuracy\n", 0), 0u);
  EXPECT_EQ(std::count(curve.begin(), curve.end(), '\n'), 4); // header + one row per epoch

  // The saved model scores exactly what the run reported.
  const nt::model_checkpoint ck = nt::load_checkpoint(s.checkpoint_path);
  EXPECT_EQ(ck.header.layers,
            std::vector<std::uint64_t>(cfg.model.layers.begin(), cfg.model.layers.end()));
  EXPECT_EQ(ck.header.config_hash, cfg.hash());
  // With training.keep_best (the default) the checkpoint holds the weights of
  // the best validation pass, which may precede the last batch.
  EXPECT_GT(ck.header.samples, 0u);
  EXPECT_LE(ck.header.samples, s.samples);
  EXPECT_EQ(ck.header.samples % 64, 0u);
  EXPECT_EQ(ck.header.step, ck.header.samples / 64);
  EXPECT_EQ(ck.header.epoch, 3u);
  EXPECT_EQ(ck.header.optimizer, nt::optimizer_kind::adam);
  std::vector<nt::slice_geometry> geometry = nt::model_geometry(cfg.model);
  std::vector<nt::dense_params> params;
  ASSERT_EQ(ck.header.activations.size(), geometry.size());
  for (std::size_t l = 0; l < geometry.size(); ++l) {
    EXPECT_EQ(geometry[l].act, ck.header.activations[l]);
    geometry[l].act = ck.header.activations[l];
    params.push_back(ck.layers[l].params);
  }
  const nt::idx_files files = nt::locate_idx_files(nt::fashion_mnist_dir());
  const nt::image_set test = nt::read_idx_pair(files.test_images, files.test_labels);
  const nt::evaluation ev = nt::evaluate_model(geometry, params, test, nullptr);
  EXPECT_EQ(ev.samples, 10000u);
  EXPECT_EQ(ev.accuracy, s.test.accuracy);
  EXPECT_DOUBLE_EQ(ev.loss, s.test.loss);
  EXPECT_EQ(ev.confusion, s.test.confusion);

  // The run is deterministic in its seed: the same configuration again
  // produces the same checkpoint, bit for bit.
  nt::run_config again = cfg;
  again.training.output_dir = path("again");
  std::ostringstream log2;
  nt::run_centralised(again, log2);
  EXPECT_EQ(read_file(path("again") + "/model.ckpt"), read_file(s.checkpoint_path));
}

TEST_F(Training, CommandLineTrainsAndEvaluates) {
  const std::string out = path("cli-run");
  const cli_result train = run_cli(
      {"centralised", "--config-file=" + local_ini, "--data.train_limit=5000",
       "--training.max_epochs=2", "--training.output_dir=" + out, "--training.progress_interval=0"},
      path("train.log"));
  ASSERT_EQ(train.code, 0) << train.output;
  EXPECT_CONTAINS(train.output, "test: accuracy");
  EXPECT_CONTAINS(train.output, "epoch 2/2");
  const double trained = number_after(train.output, "test: accuracy ");
  EXPECT_GT(trained, 0.70) << train.output;
  ASSERT_TRUE(fs::is_regular_file(out + "/model.ckpt"));
  ASSERT_TRUE(fs::is_regular_file(out + "/curve.csv"));
  EXPECT_EQ(nt::load_checkpoint(out + "/model.ckpt").header.epoch, 2u);

  const cli_result eval =
      run_cli({"evaluate", "--checkpoint=" + out + "/model.ckpt"}, path("eval.log"));
  ASSERT_EQ(eval.code, 0) << eval.output;
  EXPECT_CONTAINS(eval.output, "confusion matrix");
  EXPECT_CONTAINS(eval.output, "on 10000 samples");
  // Same model, same test set: the same accuracy as the training run printed.
  EXPECT_DOUBLE_EQ(number_after(eval.output, "test accuracy "), trained) << eval.output;
  // Ten rows of the confusion matrix (one per true class) sum to the test set.
  std::istringstream rows{eval.output.substr(eval.output.find("confusion matrix"))};
  std::string line;
  std::getline(rows, line); // title
  std::getline(rows, line); // column header
  std::size_t total = 0;
  int n_rows = 0;
  while (std::getline(rows, line) && !line.empty()) {
    std::istringstream cells{line};
    std::size_t cls = 0;
    cells >> cls;
    EXPECT_EQ(cls, static_cast<std::size_t>(n_rows));
    std::size_t v = 0;
    while (cells >> v)
      total += v;
    ++n_rows;
  }
  EXPECT_EQ(n_rows, 10);
  EXPECT_EQ(total, 10000u);

  // A test limit is honoured.
  const cli_result limited =
      run_cli({"evaluate", "--checkpoint=" + out + "/model.ckpt", "--data.test_limit=500"},
              path("eval500.log"));
  ASSERT_EQ(limited.code, 0) << limited.output;
  EXPECT_CONTAINS(limited.output, "on 500 samples");
}

TEST_F(Training, TargetAccuracyStopsEarly) {
  nt::run_config cfg = short_fashion_run(path("target"));
  cfg.training.target_accuracy = 0.5;
  cfg.training.eval_every = 2000;
  std::ostringstream log;
  const nt::run_result s = nt::run_centralised(cfg, log);
  EXPECT_TRUE(s.reached_target) << log.str();
  EXPECT_GE(s.time_to_target, 0.0);
  EXPECT_LE(s.time_to_target, s.seconds);
  EXPECT_GE(s.best_validation_accuracy, 0.5);
  EXPECT_LT(s.samples, cfg.training.max_epochs * 10000u);
  // The first validation pass comes after 2000 samples; the target is met
  // well within the first epoch.
  EXPECT_GE(s.samples, 2000u);
  EXPECT_EQ(s.epochs, 1u);
  EXPECT_CONTAINS(log.str(), "reached target validation accuracy 0.5");
  // The model of the stopped run is still saved and evaluated.
  EXPECT_TRUE(fs::is_regular_file(s.checkpoint_path));
  EXPECT_EQ(s.test.samples, 10000u);
  EXPECT_GE(s.test.accuracy, 0.45);
  // One validation pass ran, so its weights are the ones kept.
  EXPECT_EQ(nt::load_checkpoint(s.checkpoint_path).header.samples, s.samples);
}

TEST_F(Training, KeptCheckpointDescribesTheBestValidationPass) {
  // keep_best: the header's samples and epoch are those of the curve row
  // with the best validation accuracy (the first, on ties), not of the end.
  nt::run_config cfg = short_fashion_run(path("best"));
  cfg.training.eval_every = 1000;
  std::ostringstream log;
  const nt::run_result s = nt::run_centralised(cfg, log);
  std::ifstream in{s.curve_path};
  std::string line;
  std::getline(in, line);
  double best = -1;
  std::uint64_t best_samples = 0;
  std::uint64_t best_epoch = 0;
  std::size_t rows = 0;
  while (std::getline(in, line)) {
    std::stringstream ss{line};
    std::string f[6];
    for (auto& x : f)
      std::getline(ss, x, ',');
    ++rows;
    if (std::stod(f[5]) > best) {
      best = std::stod(f[5]);
      best_samples = std::stoull(f[1]);
      best_epoch = std::stoull(f[0]);
    }
  }
  ASSERT_GE(rows, 20u);
  const nt::model_checkpoint ck = nt::load_checkpoint(s.checkpoint_path);
  EXPECT_EQ(ck.header.samples, best_samples);
  EXPECT_EQ(ck.header.epoch, best_epoch);
  EXPECT_EQ(ck.header.step, best_samples / cfg.training.batch_size);
}

} // namespace
