// nettorrent: the command-line front end. Thin: parse, run, report errors.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "embedded.hpp"
#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/cluster.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/plot.hpp"
#include "nettorrent/run_support.hpp"
#include "node.hpp"

namespace nt = nettorrent;

namespace {

void usage(std::ostream& os) {
  os << "usage: nettorrent <command> [options]\n\n"
        "commands:\n"
        "  train --config-file=FILE [--section.key=value ...]\n"
        "      train with the actor pipeline, every actor in this process\n"
        "  node --config-file=NODE_FILE\n"
        "      run one node of a cluster (see config/cluster/)\n"
        "  centralised --config-file=FILE [--section.key=value ...]\n"
        "      train the whole model in one thread (the reference run)\n"
        "  evaluate --checkpoint=FILE [--data.dir=DIR] [--data.test_limit=N]\n"
        "      score a saved model on the test split: accuracy, loss, confusion matrix\n"
        "  plot --curve=CURVE_CSV [--out=PNG]\n"
        "      draw a learning curve with gnuplot (runs do this themselves at the end)\n"
        "  keys\n"
        "      list every configuration key with its type and default\n"
        "  help\n";
}

/// Says so when no --config-file is given: the built-in defaults apply.
void note_defaults(const std::vector<std::string>& args) {
  if (!nt::split_command_line(args).config_file.empty())
    return;
  std::cerr << "note: no --config-file given: using the built-in defaults "
               "(nettorrent keys lists them; config/local.ini is the documented example)\n";
}

int cmd_centralised(const std::vector<std::string>& args) {
  note_defaults(args);
  const nt::run_config cfg = nt::load_run_config(args);
  const nt::run_summary s = nt::run_centralised(cfg, std::cout);
  (void)s;
  return 0;
}

int cmd_train(const std::vector<std::string>& args) {
  note_defaults(args);
  const nt::run_config cfg = nt::load_run_config(args);
  const nt::run_report r = nt::run_embedded(cfg, std::cout);
  if (!r.ok) {
    std::cerr << "nettorrent train: error: " << r.error << '\n';
    return 1;
  }
  nt::print_summary(r, std::cout);
  return 0;
}

int cmd_node(const std::vector<std::string>& args) {
  const nt::command_line cl = nt::split_command_line(args);
  if (cl.config_file.empty())
    throw nt::error("node: --config-file=NODE_FILE is required");
  nt::node_config nc = nt::load_node_config(cl.config_file);
  // Overrides change the shared description: give every node the same ones,
  // or the coordinator refuses the nodes whose hash differs.
  nt::apply_overrides(cl.rest, nc.cluster.run);
  try {
    nc.cluster.validate();
  } catch (const nt::error& e) {
    throw nt::error(nc.cluster_file + " (with command-line overrides): " + e.what());
  }
  return nt::run_node(nc, std::cout, std::cerr);
}

int cmd_plot(const std::vector<std::string>& args) {
  std::string curve;
  std::string png;
  for (const auto& a : args) {
    if (a.rfind("--curve=", 0) == 0)
      curve = a.substr(8);
    else if (a.rfind("--out=", 0) == 0)
      png = a.substr(6);
    else
      throw nt::error("plot: unexpected argument \"" + a
                      + "\" (expected --curve=FILE [--out=FILE])");
  }
  if (curve.empty())
    throw nt::error("plot: --curve=CURVE_CSV is required");
  if (png.empty())
    png = curve.substr(0, curve.rfind('.')) + ".png";
  if (nt::plot_curve(curve, png, std::cerr))
    std::cout << "plotted " << png << '\n';
  return 0;
}

int cmd_evaluate(const std::vector<std::string>& args) {
  std::string checkpoint;
  std::vector<std::string> rest;
  for (const auto& a : args) {
    if (a.rfind("--checkpoint=", 0) == 0)
      checkpoint = a.substr(13);
    else if (a.rfind("--data.", 0) == 0)
      rest.push_back(a);
    else
      throw nt::error("evaluate: unexpected argument \"" + a
                      + "\" (expected --checkpoint=FILE and optionally --data.dir=, "
                        "--data.test_limit=; the model comes from the checkpoint)");
  }
  if (checkpoint.empty())
    throw nt::error("evaluate: --checkpoint=FILE is required");
  const nt::model_checkpoint ck = nt::load_checkpoint(checkpoint);
  nt::run_config cfg = nt::load_run_config(rest);
  cfg.model.layers.assign(ck.header.layers.begin(), ck.header.layers.end());
  std::vector<nt::slice_geometry> geometry = nt::model_geometry(cfg.model);
  std::vector<nt::dense_params> params;
  for (std::size_t l = 0; l < geometry.size(); ++l) {
    geometry[l].act = ck.header.activations[l];
    params.push_back(ck.layers[l].params);
    if (!nt::all_finite(params.back().w) || !nt::all_finite(params.back().b))
      throw nt::error(checkpoint + ": layer " + std::to_string(l + 1)
                      + " holds non-finite weights (saved from a diverged run?)");
  }
  nt::prepare_math_thread();
  const std::string dir = cfg.data.dir.empty() ? nt::fashion_mnist_dir() : cfg.data.dir;
  const nt::idx_files files = nt::locate_idx_files(dir);
  const nt::image_set test = nt::read_idx_pair(files.test_images, files.test_labels);
  if (test.features != cfg.model.layers.front())
    throw nt::error(files.test_images + ": images have " + std::to_string(test.features)
                    + " pixels but " + checkpoint + " expects "
                    + std::to_string(cfg.model.layers.front()));
  if (test.classes > cfg.model.layers.back())
    throw nt::error(files.test_labels + ": labels go up to " + std::to_string(test.classes - 1)
                    + " but " + checkpoint + " has only " + std::to_string(cfg.model.layers.back())
                    + " classes");
  std::vector<std::uint32_t> idx(
      cfg.data.test_limit != 0 ? std::min(cfg.data.test_limit, test.size()) : test.size());
  for (std::size_t i = 0; i < idx.size(); ++i)
    idx[i] = static_cast<std::uint32_t>(i);
  const nt::evaluation ev = nt::evaluate_model(geometry, params, test, &idx);
  std::printf("checkpoint: %s (step %llu, %llu samples, epoch %llu)\n", checkpoint.c_str(),
              static_cast<unsigned long long>(ck.header.step),
              static_cast<unsigned long long>(ck.header.samples),
              static_cast<unsigned long long>(ck.header.epoch));
  std::printf("test accuracy %.4f, loss %.4f on %zu samples\n", ev.accuracy, ev.loss, ev.samples);
  std::printf("confusion matrix (rows: true class, columns: predicted)\n     ");
  for (std::size_t k = 0; k < ev.classes; ++k)
    std::printf("%6zu", k);
  std::printf("\n");
  for (std::size_t t = 0; t < ev.classes; ++t) {
    std::printf("%4zu ", t);
    for (std::size_t p = 0; p < ev.classes; ++p)
      std::printf("%6zu", ev.confusion[t * ev.classes + p]);
    std::printf("\n");
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "centralised" || cmd == "centralized")
      return cmd_centralised(args);
    if (cmd == "node")
      return cmd_node(args);
    if (cmd == "train")
      return cmd_train(args);
    if (cmd == "plot")
      return cmd_plot(args);
    if (cmd == "evaluate")
      return cmd_evaluate(args);
    if (cmd == "keys") {
      std::cout << "run configuration (config/local.ini; cluster files take them too):\n"
                << nt::describe_config_keys() << "\ncluster and node files (config/cluster/):\n"
                << nt::describe_cluster_keys();
      return 0;
    }
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
      usage(std::cout);
      return 0;
    }
    std::cerr << "nettorrent: unknown command \"" << cmd << "\"\n";
    usage(std::cerr);
    return 2;
  } catch (const nt::error& e) {
    std::cerr << "nettorrent " << cmd << ": error: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "nettorrent " << cmd << ": internal error: " << e.what() << '\n';
    return 1;
  }
}
