// nettorrent: the command-line front end. Thin: parse, run, report errors.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "build_info.hpp"
#include "nettorrent/centralised.hpp"
#include "nettorrent/checkpoint.hpp"
#include "nettorrent/cluster.hpp"
#include "nettorrent/config.hpp"
#include "nettorrent/cost_model.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/memory.hpp"
#include "nettorrent/model.hpp"
#include "nettorrent/plot.hpp"
#include "nettorrent/run_support.hpp"
#include "nettorrent/session.hpp"
#include "nettorrent/signals.hpp"
#include "nettorrent/version.hpp"
#include "process_session.hpp"

namespace nt = nettorrent;

namespace {

// --- help ------------------------------------------------------------------------

// What `train` and `centralised` say about their configuration options.
constexpr std::string_view run_options =
    "  --config-file=FILE    the run configuration (CAF INI syntax); without it the\n"
    "                        built-in defaults apply (config/local.ini documents them)\n"
    "  --section.key=value   override one key after the file, e.g.\n"
    "                        --training.max_epochs=3 (nettorrent keys lists every key)\n";

// What `centralised` adds (train and node will take it too).
constexpr std::string_view resume_option =
    "  --resume=PATH         continue the run of a run checkpoint (run-*.ckpt), or of\n"
    "                        the newest one in directory PATH (a run's output_dir);\n"
    "                        bit for bit. Only training.max_epochs, target_accuracy,\n"
    "                        output_dir, topology.slices, topology.replicas and\n"
    "                        [system] may differ\n";

constexpr std::string_view help_option = "  -h, --help            show this help\n";

/// One command of the CLI: its help and the function that runs it.
struct command {
  std::string_view name;
  std::string_view synopsis;    ///< the arguments, as in "usage: nettorrent NAME SYNOPSIS"
  std::string_view summary;     ///< one line for the overview
  std::string_view description; ///< what it does, in a few lines
  std::string_view options;     ///< one entry per option; -h/--help is added
  std::string_view example;     ///< indented command lines
  int (*run)(const std::vector<std::string>& args);
};

const std::vector<command>& commands();

void usage(std::ostream& os) {
  os << "usage: nettorrent <command> [options]\n\ncommands:\n";
  for (const auto& c : commands())
    os << "  " << c.name << (c.synopsis.empty() ? "" : " ") << c.synopsis << "\n      " << c.summary
       << "\n";
  os << "\n`nettorrent <command> --help` describes one command.\n";
}

void command_usage(const command& c, std::ostream& os) {
  os << "usage: nettorrent " << c.name << (c.synopsis.empty() ? "" : " ") << c.synopsis << "\n\n"
     << c.description << "\noptions:\n"
     << c.options << help_option << "\nexample:\n"
     << c.example;
}

const command* find_command(std::string_view name) {
  for (const auto& c : commands())
    if (c.name == name)
      return &c;
  return nullptr;
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
  const nt::command_line cl = nt::split_command_line(args);
  const nt::run_config cfg = nt::load_run_config_from(cl);
  nt::run_centralised(cfg, std::cout, cl.resume);
  return 0;
}

int cmd_train(const std::vector<std::string>& args) {
  note_defaults(args);
  const nt::command_line cl = nt::split_command_line(args);
  const nt::run_config cfg = nt::load_run_config_from(cl);
  const nt::run_result r = nt::run_embedded(cfg, std::cout, true, cl.resume);
  if (!r.ok) {
    std::cerr << "nettorrent train: error: " << r.error << '\n';
    return 1;
  }
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
  return nt::run_node(nc, std::cout, std::cerr, cl.resume);
}

/// "ID:RATE,ID:RATE" or "RATE" (every node) of --bandwidth=.
void read_bandwidth(const std::string& list, nt::plan_options& opt) {
  std::size_t at = 0;
  while (at <= list.size()) {
    const std::size_t end = std::min(list.find(',', at), list.size());
    const std::string item = list.substr(at, end - at);
    const std::size_t colon = item.find(':');
    const std::string rate = colon == std::string::npos ? item : item.substr(colon + 1);
    char* stop = nullptr;
    const double mbit = std::strtod(rate.c_str(), &stop);
    if (rate.empty() || stop == nullptr || *stop != '\0' || !(mbit > 0))
      throw nt::error("plan: --bandwidth: \"" + item
                      + "\" is not ID:RATE or RATE (Mbit/s, a number above 0)");
    if (colon == std::string::npos)
      opt.default_mbit = mbit;
    else
      opt.bandwidth.emplace_back(item.substr(0, colon), mbit);
    at = end + 1;
  }
}

/// The whole number after the first `skip` characters of flag `a` (1 to 10^6).
std::size_t whole_number(const std::string& a, std::size_t skip) {
  const std::string v = a.substr(skip);
  char* stop = nullptr;
  const unsigned long long x = std::strtoull(v.c_str(), &stop, 10);
  if (v.empty() || v[0] == '-' || *stop != '\0' || x < 1 || x > 1000000)
    throw nt::error("plan: " + a + ": expected a whole number from 1 to 1000000");
  return static_cast<std::size_t>(x);
}

int cmd_plan(const std::vector<std::string>& args) {
  std::string file;
  nt::plan_options opt;
  opt.cores = static_cast<double>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::string> overrides;
  for (const auto& a : args) {
    if (a.rfind("--config-file=", 0) == 0) {
      if (!file.empty())
        throw nt::error("plan: --config-file given twice");
      file = a.substr(14);
      if (file.empty())
        throw nt::error("plan: --config-file= needs a path");
    } else if (a.rfind("--bandwidth=", 0) == 0) {
      read_bandwidth(a.substr(12), opt);
    } else if (a.rfind("--nodes=", 0) == 0) {
      opt.nodes = whole_number(a, 8);
    } else if (a.rfind("--cores=", 0) == 0) {
      // A fraction too: nodes that share a machine's cores (0.67 each for
      // three nodes on two cores).
      const std::string v = a.substr(8);
      char* stop = nullptr;
      opt.cores = std::strtod(v.c_str(), &stop);
      if (v.empty() || *stop != '\0' || !(opt.cores >= 0.01 && opt.cores <= 1000000))
        throw nt::error("plan: " + a + ": expected a number of cores from 0.01 to 1000000");
    } else if (a.rfind("--", 0) == 0 && a.find('.') != std::string::npos) {
      overrides.push_back(a);
    } else {
      throw nt::error("plan: unexpected argument \"" + a
                      + "\" (expected --config-file=CLUSTER [--bandwidth=ID:RATE,...] "
                        "[--nodes=N] [--cores=K] [--section.key=value ...])");
    }
  }
  if (file.empty())
    throw nt::error("plan: --config-file=CLUSTER (a cluster file) is required");
  nt::cluster_config cc = nt::load_cluster_config(file);
  nt::apply_overrides(overrides, cc.run);
  nt::prepare_math_thread();
  opt.gflops = nt::measure_gflops(cc.run);
  std::cout << nt::plan_report(cc, opt);
  return 0;
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
  const std::vector<std::uint32_t> idx = nt::test_selection(cfg, test);
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

/// The command `word` names: aliases and option spellings resolved.
std::string_view command_name(std::string_view word) {
  if (word == "centralized")
    return "centralised";
  if (word == "--help" || word == "-h")
    return "help";
  if (word == "--version")
    return "version";
  return word;
}

int cmd_keys(const std::vector<std::string>&) {
  std::cout << "run configuration (config/local.ini; cluster files take them too):\n"
            << nt::describe_config_keys() << "\ncluster and node files (config/cluster/):\n"
            << nt::describe_cluster_keys();
  return 0;
}

int cmd_version(const std::vector<std::string>&) {
  std::cout << "nettorrent " << nt::version_string() << "\n"
            << "CAF " << nt::caf_version_string() << "\n"
            << "Eigen " << nt::eigen_version_string() << "\n"
            << "compiler " << nt::compiler_version_string() << "\n";
  return 0;
}

int cmd_help(const std::vector<std::string>& args) {
  if (args.empty()) {
    usage(std::cout);
    return 0;
  }
  const command* c = find_command(command_name(args[0]));
  if (c == nullptr) {
    std::cerr << "nettorrent help: unknown command \"" << args[0] << "\"\n";
    usage(std::cerr);
    return 2;
  }
  command_usage(*c, std::cout);
  return 0;
}

const std::vector<command>& commands() {
  static const std::string centralised_options =
      std::string{run_options} + std::string{resume_option};
  static const std::vector<command> all = {
      {"train", "[--config-file=FILE] [--resume=PATH] [--section.key=value ...]",
       "train with the actor pipeline, every actor in this process",
       "Trains with the actor pipeline (replicas, swarms of neuron slices, gradient\n"
       "relays, a coordinator), every actor in this process. Prints a line per\n"
       "validation pass and a summary, and writes model.ckpt, curve.csv,\n"
       "curve.png and run checkpoints (every training.checkpoint_every sync rounds\n"
       "and at the end) into training.output_dir. A lost actor is recovered from.\n",
       centralised_options,
       "  nettorrent train --config-file=config/local.ini --topology.replicas=4\n"
       "  nettorrent train --config-file=config/local.ini --resume=runs/local\n",
       cmd_train},
      {"node", "--config-file=NODE_FILE [--resume=PATH] [--section.key=value ...]",
       "run one node of a cluster (see config/cluster/)",
       "Runs one node of a cluster: reads the node file and the cluster file it\n"
       "names, spawns the actors the placement puts on this node and joins the\n"
       "others. The coordinator's node writes the outputs (training.output_dir).\n"
       "SIGTERM or SIGINT to the coordinator's node ends the run at its next sync\n"
       "round; to any other node it is a graceful leave: its actors move to the\n"
       "other nodes at the next sync round, nothing is redone, and it exits 0. A\n"
       "second signal exits at once.\n",
       "  --config-file=NODE_FILE\n"
       "                        this node's file ([node] id, cluster_file, bind)\n"
       "  --section.key=value   override a run key of the cluster file; give every\n"
       "                        node the same ones, or the cluster hashes differ\n"
       "  --resume=PATH         the coordinator's node only: continue the run of a\n"
       "                        run checkpoint, or of the newest one in directory PATH\n",
       "  nettorrent node --config-file=config/cluster/node-0.ini\n"
       "  (scripts/launch-cluster.sh starts every node of config/cluster/)\n",
       cmd_node},
      {"centralised", "[--config-file=FILE] [--resume=PATH] [--section.key=value ...]",
       "train the whole model in one thread (the reference run)",
       "Trains the whole model in one thread: the reference run the actor pipeline\n"
       "is checked against. Reads the same configuration and prints and writes what\n"
       "train does, and run checkpoints (run-*.ckpt: every\n"
       "training.checkpoint_every validation passes and at the end) to resume from.\n"
       "'centralized' is accepted too.\n",
       centralised_options,
       "  nettorrent centralised --config-file=config/local.ini --training.max_epochs=5\n"
       "  nettorrent centralised --config-file=config/local.ini --training.max_epochs=10 \\\n"
       "      --resume=runs/local\n",
       cmd_centralised},
      {"evaluate", "--checkpoint=FILE [--data.dir=DIR] [--data.test_limit=N]",
       "score a saved model on the test split: accuracy, loss, confusion matrix",
       "Loads a checkpoint, whatever topology trained it, and scores it on the test\n"
       "split: accuracy, loss and the confusion matrix. The model comes from the\n"
       "checkpoint.\n",
       "  --checkpoint=FILE     the model.ckpt to score (required)\n"
       "  --data.dir=DIR        directory with the IDX files (default: the\n"
       "                        dataset-fashion-mnist package)\n"
       "  --data.test_limit=N   score the first N test samples only (0 = all)\n",
       "  nettorrent evaluate --checkpoint=runs/local/model.ckpt\n", cmd_evaluate},
      {"plot", "--curve=CURVE_CSV [--out=PNG]",
       "draw a learning curve with gnuplot (runs do this themselves at the end)",
       "Draws a learning curve (curve.csv of a run) with gnuplot: losses and\n"
       "validation accuracy against time and samples. Runs do this themselves at\n"
       "the end; a missing gnuplot is a warning.\n",
       "  --curve=CURVE_CSV     the curve to draw (required)\n"
       "  --out=PNG             the image to write (default: CURVE_CSV with .png)\n",
       "  nettorrent plot --curve=runs/local/curve.csv --out=/tmp/curve.png\n", cmd_plot},
      {"plan", "--config-file=CLUSTER [--bandwidth=ID:RATE,...] [--nodes=N] [--cores=K]",
       "predict what each placement of a cluster does, without training",
       "Predicts, without training, what by_swarm, by_replica, by_group (when there\n"
       "are more nodes than replicas) and round_robin (and the file's explicit\n"
       "placement) would do with a cluster description: samples/s, the bottleneck,\n"
       "the bytes per batch through the busiest link and what the sync rounds move,\n"
       "and which layout auto would choose. Compute comes from a short probe on\n"
       "this machine (the centralised trainer on the run's model, one core); links\n"
       "run at the rates given (default 1000 Mbit/s). The model and its\n"
       "assumptions: docs/cluster.md, planning a cluster.\n",
       "  --config-file=CLUSTER a cluster file (required)\n"
       "  --bandwidth=LIST      link rates in Mbit/s each way: RATE for every node,\n"
       "                        ID:RATE for one, comma-separated (e.g. 100,n0:1000)\n"
       "  --nodes=N             N nodes n000.. instead of the file's (larger clusters)\n"
       "  --cores=K             cores per node, a fraction too (default: this machine's)\n"
       "  --section.key=value   override a run key of the cluster file\n",
       "  nettorrent plan --config-file=config/hosts/cluster.ini --bandwidth=100\n"
       "  nettorrent plan --config-file=config/cluster/cluster.ini --nodes=100 \\\n"
       "      --topology.replicas=10 --bandwidth=10\n",
       cmd_plan},
      {"keys", "", "list every configuration key with its type and default",
       "Lists every key of run configurations, cluster files and node files with\n"
       "its type, default and meaning.\n",
       "", "  nettorrent keys | grep optimizer.\n", cmd_keys},
      {"help", "[COMMAND]", "this overview, or one command's help",
       "Prints the list of commands, or the help of COMMAND (as nettorrent COMMAND\n"
       "--help does).\n",
       "", "  nettorrent help evaluate\n", cmd_help},
      {"version", "", "the NetTorrent, CAF, Eigen and compiler versions (also --version)",
       "Prints the versions of NetTorrent, CAF, Eigen and the compiler this binary\n"
       "was built with.\n",
       "", "  nettorrent --version\n", cmd_version},
  };
  return all;
}

/// -h or --help anywhere after the command asks for its help.
bool asks_for_help(const std::vector<std::string>& args) {
  for (const auto& a : args)
    if (a == "-h" || a == "--help")
      return true;
  return false;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(std::cerr);
    return 2;
  }
  const std::string word = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  const command* cmd = find_command(command_name(word));
  if (cmd == nullptr) {
    std::cerr << "nettorrent: unknown command \"" << word << "\"\n";
    usage(std::cerr);
    return 2;
  }
  if (asks_for_help(args)) {
    command_usage(*cmd, std::cout);
    return 0;
  }
  // The long runs: SIGINT / SIGTERM stop them gracefully, SIGUSR1 dumps
  // what their actors wait for. Before any thread starts.
  const std::string_view name = cmd->name;
  // Few malloc arenas, so what a recovery or the end of a run frees is not
  // kept by a dozen threads each (nettorrent/memory.hpp).
  if (name == "train" || name == "centralised" || name == "node") {
    nt::watch_signals("nettorrent " + std::string{name});
    nt::limit_malloc_arenas();
  }
  try {
    const int code = cmd->run(args);
    if (const std::string sig = nt::stop_signal_name(); code == 0 && !sig.empty())
      std::cout << "nettorrent " << name << ": stopped early by " << sig
                << "; --resume with the run checkpoint above continues the run" << std::endl;
    return code;
  } catch (const nt::error& e) {
    std::cerr << "nettorrent " << cmd->name << ": error: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "nettorrent " << cmd->name << ": internal error: " << e.what() << '\n';
    return 1;
  }
}
