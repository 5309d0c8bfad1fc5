#include "nettorrent/data.hpp"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <sys/stat.h>

#include "nettorrent/error.hpp"

namespace nettorrent {

namespace {

struct gz_closer {
  void operator()(gzFile f) const noexcept { gzclose(f); }
};
using gz_ptr = std::unique_ptr<gzFile_s, gz_closer>;

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Reads exactly `n` bytes; returns how many were read before EOF. Throws on
// a decompression error.
std::size_t read_some(gzFile f, std::uint8_t* dst, std::size_t n, const std::string& path) {
  std::size_t total = 0;
  while (total < n) {
    const auto want = static_cast<unsigned>(std::min<std::size_t>(n - total, 1u << 30));
    const int got = gzread(f, dst + total, want);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      throw error(path + ": cannot read IDX data: " + (msg != nullptr ? msg : "zlib error"));
    }
    if (got == 0)
      break;
    total += static_cast<std::size_t>(got);
  }
  return total;
}

} // namespace

std::vector<std::uint8_t> read_idx(const std::string& path, std::size_t expected_rank,
                                   std::vector<std::size_t>& dims) {
  if (!file_exists(path))
    throw error(path + ": no such IDX file");
  gz_ptr f{gzopen(path.c_str(), "rb")};
  if (!f)
    throw error(path + ": cannot open IDX file");
  std::uint8_t magic[4] = {};
  if (read_some(f.get(), magic, 4, path) != 4)
    throw error(path + ": not an IDX file: shorter than its 4-byte magic number");
  if (magic[0] != 0 || magic[1] != 0)
    throw error(path + ": not an IDX file: magic number must start with two zero bytes");
  if (magic[2] != 0x08) {
    char type[8];
    std::snprintf(type, sizeof type, "0x%02x", unsigned{magic[2]});
    throw error(path + ": unsupported IDX element type " + type
                + " (only unsigned bytes, 0x08, are supported)");
  }
  if (magic[3] != expected_rank)
    throw error(path + ": IDX file has " + std::to_string(magic[3]) + " dimensions, expected "
                + std::to_string(expected_rank));
  dims.assign(expected_rank, 0);
  std::size_t total = 1;
  for (std::size_t d = 0; d < expected_rank; ++d) {
    std::uint8_t be[4] = {};
    if (read_some(f.get(), be, 4, path) != 4)
      throw error(path + ": truncated IDX header (dimension " + std::to_string(d) + ")");
    const std::size_t n = (std::size_t{be[0]} << 24) | (std::size_t{be[1]} << 16)
                          | (std::size_t{be[2]} << 8) | std::size_t{be[3]};
    if (n == 0)
      throw error(path + ": IDX dimension " + std::to_string(d) + " is zero");
    dims[d] = n;
    total *= n;
    if (total > (std::size_t{1} << 34))
      throw error(path + ": IDX dimensions announce more than 16 GiB of data");
  }
  // Grow the buffer as data really arrives (at most 64 MiB ahead of it), so a
  // header that announces more than the file holds cannot make the reader
  // allocate what it announces.
  std::vector<std::uint8_t> data;
  std::size_t got = 0;
  while (got < total) {
    const std::size_t step = std::min<std::size_t>(total - got, std::size_t{1} << 26);
    data.resize(got + step);
    const std::size_t n = read_some(f.get(), data.data() + got, step, path);
    got += n;
    if (n < step)
      break;
  }
  data.resize(got);
  if (got != total)
    throw error(path + ": truncated IDX data: header announces " + std::to_string(total)
                + " bytes, file holds " + std::to_string(got));
  std::uint8_t extra = 0;
  if (read_some(f.get(), &extra, 1, path) != 0)
    throw error(path + ": IDX file has trailing bytes after the " + std::to_string(total)
                + " announced by its header");
  return data;
}

image_set read_idx_pair(const std::string& images_path, const std::string& labels_path) {
  std::vector<std::size_t> idims;
  std::vector<std::size_t> ldims;
  image_set set;
  set.pixels = read_idx(images_path, 3, idims);
  set.labels = read_idx(labels_path, 1, ldims);
  if (idims[0] != ldims[0])
    throw error(images_path + " holds " + std::to_string(idims[0]) + " images but " + labels_path
                + " holds " + std::to_string(ldims[0]) + " labels");
  set.features = idims[1] * idims[2];
  const auto max_label = *std::max_element(set.labels.begin(), set.labels.end());
  set.classes = std::size_t{max_label} + 1;
  return set;
}

idx_files locate_idx_files(const std::string& dir) {
  auto find = [&](const char* base) {
    const std::string plain = dir + "/" + base;
    if (file_exists(plain + ".gz"))
      return plain + ".gz";
    if (file_exists(plain))
      return plain;
    throw error("data directory " + dir + " has neither " + base + ".gz nor " + base);
  };
  return {find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte"),
          find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte")};
}

std::string fashion_mnist_dir() {
  const std::string list = "/var/lib/dpkg/info/dataset-fashion-mnist.list";
  std::ifstream in{list};
  if (!in)
    throw error("Fashion-MNIST not found: the Debian package dataset-fashion-mnist is not "
                "installed (run scripts/install-deps.sh) and data.dir is not set");
  const std::string marker = "/train-images-idx3-ubyte.gz";
  std::string line;
  while (std::getline(in, line))
    if (line.size() > marker.size()
        && line.compare(line.size() - marker.size(), marker.size(), marker) == 0)
      return line.substr(0, line.size() - marker.size());
  throw error(list + " lists no train-images-idx3-ubyte.gz; reinstall dataset-fashion-mnist");
}

void split_validation(std::size_t pool_size, std::size_t validation_size, std::size_t train_limit,
                      std::uint64_t seed, std::vector<std::uint32_t>& train,
                      std::vector<std::uint32_t>& validation) {
  if (validation_size >= pool_size)
    throw error("data.validation_size = " + std::to_string(validation_size)
                + " leaves no training samples out of " + std::to_string(pool_size));
  std::vector<std::uint32_t> perm(pool_size);
  std::iota(perm.begin(), perm.end(), 0u);
  rng gen{hash_coords(seed, {0x76616c6964ULL})}; // "valid"
  shuffle(perm, gen);
  validation.assign(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(validation_size));
  auto rest_begin = perm.begin() + static_cast<std::ptrdiff_t>(validation_size);
  std::size_t rest = pool_size - validation_size;
  if (train_limit != 0)
    rest = std::min(rest, train_limit);
  train.assign(rest_begin, rest_begin + static_cast<std::ptrdiff_t>(rest));
  std::sort(validation.begin(), validation.end());
  std::sort(train.begin(), train.end());
}

std::vector<std::uint32_t> shard_indices(const std::vector<std::uint32_t>& indices,
                                         std::size_t replicas, std::size_t r) {
  if (replicas == 0 || r >= replicas)
    throw error("shard " + std::to_string(r) + " of " + std::to_string(replicas)
                + " does not exist");
  const std::size_t n = indices.size();
  const std::size_t begin = n * r / replicas;
  const std::size_t end = n * (r + 1) / replicas;
  return {indices.begin() + static_cast<std::ptrdiff_t>(begin),
          indices.begin() + static_cast<std::ptrdiff_t>(end)};
}

rng shard_rng(std::uint64_t seed, std::size_t shard) {
  return rng{hash_coords(seed, {0x7368617264ULL, shard})}; // "shard"
}

std::vector<std::uint32_t> replica_epoch_order(const std::vector<std::uint32_t>& train,
                                               std::uint64_t seed, std::size_t replicas,
                                               std::size_t r, std::uint64_t epoch, rng* gen) {
  std::vector<std::uint32_t> order = shard_indices(train, replicas, r);
  rng g = shard_rng(seed, r);
  for (std::uint64_t e = 0; e < epoch; ++e)
    shuffle(order, g);
  if (gen != nullptr)
    *gen = g;
  return order;
}

std::vector<std::vector<std::uint32_t>>
redeal(const std::vector<std::vector<std::uint32_t>>& orders,
       const std::vector<std::uint64_t>& cursors, std::size_t batch, std::size_t to) {
  if (cursors.size() != orders.size())
    throw error("a replica change lists " + std::to_string(cursors.size()) + " cursors for "
                + std::to_string(orders.size()) + " replicas");
  if (batch == 0 || to == 0)
    throw error("a replica change needs a batch size and replicas to deal to");
  std::vector<std::uint32_t> rest;
  std::vector<std::size_t> at(orders.size());
  for (std::size_t q = 0; q < orders.size(); ++q) {
    if (cursors[q] > orders[q].size())
      throw error("replica " + std::to_string(q) + " stands at " + std::to_string(cursors[q])
                  + " in an order of " + std::to_string(orders[q].size()) + " samples");
    at[q] = static_cast<std::size_t>(cursors[q]);
  }
  for (bool more = true; more;) { // a batch from each order in turn
    more = false;
    for (std::size_t q = 0; q < orders.size(); ++q) {
      const std::size_t n = std::min(batch, orders[q].size() - at[q]);
      rest.insert(rest.end(), orders[q].begin() + static_cast<std::ptrdiff_t>(at[q]),
                  orders[q].begin() + static_cast<std::ptrdiff_t>(at[q] + n));
      at[q] += n;
      more = more || at[q] < orders[q].size();
    }
  }
  std::vector<std::vector<std::uint32_t>> out(to);
  for (std::size_t j = 0; j * batch < rest.size(); ++j) { // a batch to each replica in turn
    const auto begin = rest.begin() + static_cast<std::ptrdiff_t>(j * batch);
    const auto end = rest.begin() + static_cast<std::ptrdiff_t>(std::min(rest.size(), (j + 1) * batch));
    out[j % to].insert(out[j % to].end(), begin, end);
  }
  return out;
}

std::vector<std::uint32_t> dealt_order(const std::vector<std::uint32_t>& train,
                                       std::uint64_t seed, std::size_t batch,
                                       std::size_t replicas, std::size_t r,
                                       const epoch_deal& deal) {
  if (r >= replicas)
    throw error("replica " + std::to_string(r) + " of " + std::to_string(replicas)
                + " does not exist");
  if (deal.empty())
    return replica_epoch_order(train, seed, replicas, r, deal.epoch);
  std::vector<std::vector<std::uint32_t>> orders;
  const std::size_t first = deal.changes.front().from;
  if (first == 0)
    throw error("a replica change from 0 replicas");
  for (std::size_t q = 0; q < first; ++q)
    orders.push_back(replica_epoch_order(train, seed, first, q, deal.epoch));
  for (std::size_t c = 0; c < deal.changes.size(); ++c) {
    // Change c deals to the replicas change c + 1 starts from (the last: to
    // `replicas`); redeal() refuses cursors that do not fit.
    const auto& ch = deal.changes[c];
    const std::size_t to = c + 1 < deal.changes.size() ? deal.changes[c + 1].from : replicas;
    orders = redeal(orders, ch.cursors, batch, to);
  }
  return std::move(orders[r]);
}

void gather_batch(const image_set& set, const std::uint32_t* idx, std::size_t n, matrix& x,
                  std::uint8_t* labels) {
  const auto f = static_cast<Eigen::Index>(set.features);
  if (x.rows() != static_cast<Eigen::Index>(n) || x.cols() != f)
    x.resize(static_cast<Eigen::Index>(n), f);
  using byte_row = Eigen::Map<const Eigen::Matrix<std::uint8_t, 1, Eigen::Dynamic>>;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* src = set.pixels.data() + std::size_t{idx[i]} * set.features;
    x.row(static_cast<Eigen::Index>(i)) = byte_row(src, f).cast<float>() * (1.0f / 255.0f);
    labels[i] = set.labels[idx[i]];
  }
}

image_set make_synthetic(std::size_t samples, std::size_t features, std::size_t classes,
                         float noise, std::uint64_t seed) {
  if (samples == 0 || features == 0 || classes < 2 || classes > 256)
    throw error("synthetic data needs samples > 0, features > 0 and 2..256 classes");
  image_set set;
  set.features = features;
  set.classes = classes;
  set.pixels.resize(samples * features);
  set.labels.resize(samples);
  for (std::size_t i = 0; i < samples; ++i) {
    const auto label = static_cast<std::size_t>(hash_coords(seed, {1, i}) % classes);
    set.labels[i] = static_cast<std::uint8_t>(label);
    for (std::size_t j = 0; j < features; ++j) {
      const float centre = unit_float(hash_coords(seed, {2, label, j}));
      const float v = centre + noise * normal_from_bits(hash_coords(seed, {3, i, j}));
      const float clamped = std::clamp(v, 0.0f, 1.0f);
      set.pixels[i * features + j] = static_cast<std::uint8_t>(std::lround(clamped * 255.0f));
    }
  }
  return set;
}

std::size_t validation_subset_size(std::size_t validation_size, std::size_t limit) noexcept {
  return limit == 0 ? validation_size : std::min(limit, validation_size);
}

std::vector<std::uint32_t> validation_subset(const std::vector<std::uint32_t>& validation,
                                             std::size_t limit) {
  const auto n = static_cast<std::ptrdiff_t>(validation_subset_size(validation.size(), limit));
  return {validation.begin(), validation.begin() + n};
}

} // namespace nettorrent
