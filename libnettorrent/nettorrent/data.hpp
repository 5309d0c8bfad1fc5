// Data sets: IDX files (raw or gzip), validation split, shards, per-epoch
// shuffling and batch assembly. Images stay uint8 in memory; batches are
// converted to float in [0, 1] on the fly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "nettorrent/rng.hpp"
#include "nettorrent/tensor.hpp"

namespace nettorrent {

/// Labelled images, one row of `features` bytes per sample.
struct image_set {
  std::size_t features = 0;         ///< pixels per image (rows * cols)
  std::size_t classes = 0;          ///< 1 + the largest label
  std::vector<std::uint8_t> pixels; ///< size() * features bytes
  std::vector<std::uint8_t> labels; ///< one per sample
  std::size_t size() const noexcept { return labels.size(); }
};

/// Reads an IDX file (raw, or gzip-compressed: detected from content).
/// Checks the magic number, element type (unsigned byte), the number of
/// dimensions, that the file holds exactly the announced data, and that
/// dimension sizes are non-zero. Throws nettorrent::error naming the file and
/// what is wrong. `dims` receives the dimension sizes.
std::vector<std::uint8_t> read_idx(const std::string& path, std::size_t expected_rank,
                                   std::vector<std::size_t>& dims);

/// Reads an images file (rank 3) and a labels file (rank 1) and checks that
/// they agree in count.
image_set read_idx_pair(const std::string& images_path, const std::string& labels_path);

/// The four files of an MNIST-layout data set in `dir`.
struct idx_files {
  std::string train_images, train_labels, test_images, test_labels;
};

/// Finds the files in `dir`, accepting `.gz` or uncompressed names. Throws
/// naming the directory and the missing file.
idx_files locate_idx_files(const std::string& dir);

/// The directory of the Debian package dataset-fashion-mnist, found through
/// dpkg's file list of the package. Throws with an install hint if absent.
std::string fashion_mnist_dir();

/// Training / validation / test data of one run.
struct data_splits {
  image_set train_pool;                  ///< the training file
  image_set test;                        ///< the test file
  std::vector<std::uint32_t> train;      ///< indices into train_pool
  std::vector<std::uint32_t> validation; ///< indices into train_pool
};

/// Takes `validation_size` samples of `pool` (a seeded permutation) as the
/// validation split and the rest (at most `train_limit`, 0 = all) as
/// training; both index lists are sorted ascending.
void split_validation(std::size_t pool_size, std::size_t validation_size, std::size_t train_limit,
                      std::uint64_t seed, std::vector<std::uint32_t>& train,
                      std::vector<std::uint32_t>& validation);

/// The samples a sync round scores out of a validation split of
/// `validation_size`: the first `limit` of it (topology.validation_subset;
/// 0 = all of it).
std::size_t validation_subset_size(std::size_t validation_size, std::size_t limit) noexcept;

/// The first validation_subset_size(validation.size(), limit) indices of
/// `validation`.
std::vector<std::uint32_t> validation_subset(const std::vector<std::uint32_t>& validation,
                                             std::size_t limit);

/// Shard `r` of `R` of `indices`: a contiguous, near-equal part.
std::vector<std::uint32_t> shard_indices(const std::vector<std::uint32_t>& indices,
                                         std::size_t replicas, std::size_t r);

/// The generator that orders shard `shard`'s samples, seeded from the run
/// seed. Shuffle the shard's index list with it at the start of every epoch.
rng shard_rng(std::uint64_t seed, std::size_t shard);

// --- the data order of an actor run --------------------------------------------
//
// The order of epoch e (1-based) is a function of the seed, the training
// split and the replica count R: replica r's shard (shard_indices(train, R,
// r)) shuffled e times by shard_rng(seed, r). Read as one global order of
// the epoch, batch j of replica r stands at place j * R + r, and the deal
// gives it to replica r. Every replica trains its order's whole batches, so
// an epoch trains each sample at most once and leaves out, per replica, the
// fewer than batch_size samples after its last whole batch.
//
// When R changes at a sync round inside epoch e (an elastic resume), the
// samples of e not yet trained (each old replica's order from its cursor,
// taken a batch from each replica in turn) are dealt again, a batch to each
// new replica in turn; the epoch after is ordered for the new R. Only the
// last, partial batch of such a deal is left out.

/// The order of replica `r` of `replicas` in epoch `epoch`: its shard
/// shuffled `epoch` times (epoch 0: the shard as it is). If `gen` is given,
/// it is left as the generator after those shuffles, ready for epoch + 1.
std::vector<std::uint32_t> replica_epoch_order(const std::vector<std::uint32_t>& train,
                                               std::uint64_t seed, std::size_t replicas,
                                               std::size_t r, std::uint64_t epoch,
                                               rng* gen = nullptr);

/// A change of the replica count inside an epoch: `from` replicas stood at
/// `cursors` (one per replica, into their orders of the epoch).
struct replica_change {
  std::uint32_t from = 0;
  std::vector<std::uint64_t> cursors;

  friend bool operator==(const replica_change& a, const replica_change& b) {
    return a.from == b.from && a.cursors == b.cursors;
  }
};

/// The replica-count changes inside epoch `epoch`, in the order they came.
/// Empty: the epoch is ordered for the run's R.
struct epoch_deal {
  std::uint64_t epoch = 0;
  std::vector<replica_change> changes;

  bool empty() const noexcept { return changes.empty(); }
  friend bool operator==(const epoch_deal& a, const epoch_deal& b) {
    return a.epoch == b.epoch && a.changes == b.changes;
  }
};

/// The samples `orders` have not trained (each from its cursor), a batch of
/// `batch` from each order in turn, dealt a batch to each of `to` replicas
/// in turn. Throws nettorrent::error if the cursors do not fit the orders.
std::vector<std::vector<std::uint32_t>>
redeal(const std::vector<std::vector<std::uint32_t>>& orders,
       const std::vector<std::uint64_t>& cursors, std::size_t batch, std::size_t to);

/// Replica `r` of `replicas`: its order of epoch deal.epoch after the deal's
/// changes (the last change deals to `replicas`). Throws nettorrent::error
/// naming what does not fit (a change's cursor count, a cursor past its order).
std::vector<std::uint32_t> dealt_order(const std::vector<std::uint32_t>& train,
                                       std::uint64_t seed, std::size_t batch,
                                       std::size_t replicas, std::size_t r,
                                       const epoch_deal& deal);

/// Fills `x` (n x features, floats in [0, 1]) and `labels` (n) from the
/// samples `idx[0..n)` of `set`. `x` is resized only if its shape differs.
void gather_batch(const image_set& set, const std::uint32_t* idx, std::size_t n, matrix& x,
                  std::uint8_t* labels);

/// A small synthetic classification set for tests: `classes` Gaussian blobs
/// in `features` dimensions, quantised to bytes. Deterministic in `seed`.
image_set make_synthetic(std::size_t samples, std::size_t features, std::size_t classes,
                         float noise, std::uint64_t seed);

} // namespace nettorrent
