#include "nettorrent/plot.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <ostream>
#include <vector>

#include "nettorrent/error.hpp"
#include "nettorrent/run_support.hpp"

extern char** environ;

namespace nettorrent {

namespace {

/// Quotes a path for a gnuplot string literal.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"''"} : std::string(1, c);
  return out + "'";
}

/// The gnuplot program that draws `csv` into `png`.
std::string curve_plot_script(const std::string& csv, const std::string& png) {
  const std::string data = quoted(csv);
  return "set terminal pngcairo size 1200,800 font ',10'\n"
         "set output "
         + quoted(png)
         + "\n"
           "set datafile separator ','\n"
           "set key autotitle columnhead\n"
           "set grid\n"
           "set multiplot layout 2,2 title 'NetTorrent learning curve: "
         + csv
         + "' noenhanced\n"
           "set xlabel 'seconds'\nset ylabel 'loss'\n"
           "plot "
         + data
         + " using 3:4 with linespoints title 'training loss', "
           "'' using 3:5 with linespoints title 'validation loss'\n"
           "set ylabel 'validation accuracy'\n"
           "plot "
         + data
         + " using 3:6 with linespoints title 'validation accuracy'\n"
           "set xlabel 'training samples'\nset ylabel 'loss'\n"
           "plot "
         + data
         + " using 2:4 with linespoints title 'training loss', "
           "'' using 2:5 with linespoints title 'validation loss'\n"
           "set ylabel 'validation accuracy'\n"
           "plot "
         + data
         + " using 2:6 with linespoints title 'validation accuracy'\n"
           "unset multiplot\n";
}

} // namespace

bool plot_curve(const std::string& csv, const std::string& png, std::ostream& warn) {
  {
    std::ifstream in{csv};
    std::string header;
    if (!in || !std::getline(in, header))
      throw error(csv + ": cannot read the learning curve");
    if (header.rfind("epoch,samples,seconds,train_loss,validation_loss,validation_accuracy", 0)
        != 0)
      throw error(csv + ": not a NetTorrent learning curve (unexpected header \"" + header + "\")");
  }
  const std::string tmp_png = png + ".tmp." + std::to_string(::getpid()) + ".png";
  const std::string script = png + ".gp";
  write_file_atomically(script, [&](std::ostream& os) { os << curve_plot_script(csv, tmp_png); });
  std::vector<char*> argv{const_cast<char*>("gnuplot"), const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) {
    std::remove(script.c_str());
    warn << "warning: no plot of " << csv << ": cannot run gnuplot (" << std::strerror(rc)
         << "); install gnuplot-nox (scripts/install-deps.sh)" << std::endl;
    return false;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  std::remove(script.c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::remove(tmp_png.c_str());
    warn << "warning: gnuplot failed to draw " << png << " from " << csv << std::endl;
    return false;
  }
  if (std::rename(tmp_png.c_str(), png.c_str()) != 0) {
    std::remove(tmp_png.c_str());
    throw error(png + ": cannot rename the plot into place: " + std::strerror(errno));
  }
  return true;
}

} // namespace nettorrent
