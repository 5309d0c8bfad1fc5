// Plots a learning curve (curve.csv) with gnuplot: loss and validation
// accuracy against time and against samples, as one PNG.
#pragma once

#include <iosfwd>
#include <string>

namespace nettorrent {

/// Runs gnuplot to draw `csv` into `png` (written atomically). A missing or
/// failing gnuplot is not an error: a warning goes to `warn` and false is
/// returned. Throws nettorrent::error if `csv` is missing or not a curve.
bool plot_curve(const std::string& csv, const std::string& png, std::ostream& warn);

} // namespace nettorrent
