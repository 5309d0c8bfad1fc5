// Data sets: IDX reading (raw and gzip, good and bad files), locating the
// Fashion-MNIST files, validation split, shards, batch assembly and the
// synthetic test set.
#include <gtest/gtest.h>

#include "test_support.hpp"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "nettorrent/data.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/rng.hpp"

namespace nt = nettorrent;
using test_support::error_of;
namespace fs = std::filesystem;

namespace {

using bytes = std::vector<std::uint8_t>;

using test_support::temp_dir_test;

void put_be32(bytes& out, std::uint32_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 24));
  out.push_back(static_cast<std::uint8_t>(v >> 16));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

// An IDX file: magic 0x0000 08 <rank>, big-endian dimensions, data.
bytes make_idx(const std::vector<std::uint32_t>& dims, const bytes& data,
               std::uint8_t type = 0x08) {
  bytes out{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims)
    put_be32(out, d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_raw(const std::string& path, const bytes& b) {
  std::ofstream os{path, std::ios::binary};
  os.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(os.good()) << path;
}

void write_gz(const std::string& path, const bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!b.empty()) {
    ASSERT_EQ(gzwrite(f, b.data(), static_cast<unsigned>(b.size())), static_cast<int>(b.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

bytes read_all(const std::string& path) {
  std::ifstream is{path, std::ios::binary};
  return bytes{std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}

// Deterministic, poorly compressible image bytes.
bytes image_bytes(std::size_t n, std::uint64_t seed = 7) {
  bytes b(n);
  nt::rng gen{seed};
  for (auto& v : b)
    v = static_cast<std::uint8_t>(gen.next() >> 56);
  return b;
}

std::string read_idx_error(const std::string& path, std::size_t rank) {
  std::vector<std::size_t> dims;
  return error_of([&] { nt::read_idx(path, rank, dims); });
}

// ---------------------------------------------------------------------------
// IDX: good files

using IdxGood = temp_dir_test;

TEST_F(IdxGood, RawAndGzipImagesReadBackExactly) {
  const bytes pixels = image_bytes(5 * 3 * 4);
  const bytes file = make_idx({5, 3, 4}, pixels);
  write_raw(path("img.raw"), file);
  write_gz(path("img.gz"), file);
  for (const char* name : {"img.raw", "img.gz"}) {
    SCOPED_TRACE(name);
    std::vector<std::size_t> dims;
    const bytes data = nt::read_idx(path(name), 3, dims);
    EXPECT_EQ(dims, (std::vector<std::size_t>{5, 3, 4}));
    EXPECT_EQ(data, pixels);
  }
  // The gzip file really is compressed data, not a copy of the raw one.
  EXPECT_NE(read_all(path("img.gz")), file);
}

TEST_F(IdxGood, LabelsRankOne) {
  const bytes labels{3, 0, 1, 2, 1, 0, 3};
  write_gz(path("lab.gz"), make_idx({7}, labels));
  std::vector<std::size_t> dims{99, 99, 99};
  EXPECT_EQ(nt::read_idx(path("lab.gz"), 1, dims), labels);
  EXPECT_EQ(dims, (std::vector<std::size_t>{7}));
}

TEST_F(IdxGood, LargeDimensionsAreBigEndian) {
  // 300 = 0x012c: a little-endian reader would see 0x2c010000.
  const bytes labels(300, 1);
  write_raw(path("lab"), make_idx({300}, labels));
  std::vector<std::size_t> dims;
  EXPECT_EQ(nt::read_idx(path("lab"), 1, dims).size(), 300u);
  EXPECT_EQ(dims, (std::vector<std::size_t>{300}));
}

TEST_F(IdxGood, PairGivesFeaturesClassesAndRows) {
  const bytes pixels = image_bytes(6 * 2 * 3, 11);
  const bytes labels{0, 4, 2, 4, 1, 0};
  write_gz(path("images.gz"), make_idx({6, 2, 3}, pixels));
  write_raw(path("labels"), make_idx({6}, labels));
  const nt::image_set set = nt::read_idx_pair(path("images.gz"), path("labels"));
  EXPECT_EQ(set.size(), 6u);
  EXPECT_EQ(set.features, 6u);
  EXPECT_EQ(set.classes, 5u); // 1 + the largest label
  EXPECT_EQ(set.pixels, pixels);
  EXPECT_EQ(set.labels, labels);
}

// ---------------------------------------------------------------------------
// IDX: bad files. Every error names the file and says what is wrong.

using IdxBad = temp_dir_test;

TEST_F(IdxBad, MissingFile) {
  const std::string p = path("does-not-exist.gz");
  const std::string msg = read_idx_error(p, 3);
  EXPECT_CONTAINS(msg, p);
  EXPECT_CONTAINS(msg, "no such");
}

TEST_F(IdxBad, DirectoryIsNotAFile) {
  const std::string msg = read_idx_error(dir_.string(), 3);
  EXPECT_CONTAINS(msg, dir_.string());
  EXPECT_CONTAINS(msg, "no such");
}

TEST_F(IdxBad, EmptyFileRawAndGzip) {
  write_raw(path("empty"), {});
  write_gz(path("empty.gz"), {});
  for (const char* name : {"empty", "empty.gz"}) {
    SCOPED_TRACE(name);
    const std::string msg = read_idx_error(path(name), 1);
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "not an IDX file");
    EXPECT_CONTAINS(msg, "magic");
  }
}

TEST_F(IdxBad, BadMagic) {
  bytes file = make_idx({2}, {1, 2});
  file[0] = 0x12;
  file[1] = 0x34;
  write_raw(path("bad"), file);
  write_gz(path("bad.gz"), file);
  // A text file is not an IDX file either.
  write_raw(path("text"), bytes{'h', 'e', 'l', 'l', 'o', '\n'});
  for (const char* name : {"bad", "bad.gz", "text"}) {
    SCOPED_TRACE(name);
    const std::string msg = read_idx_error(path(name), 1);
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "magic");
  }
}

TEST_F(IdxBad, WrongElementType) {
  // 0x0D is IDX's float type: four bytes per element.
  write_raw(path("floats"), make_idx({2}, bytes(8, 0), 0x0D));
  const std::string msg = read_idx_error(path("floats"), 1);
  EXPECT_CONTAINS(msg, path("floats"));
  EXPECT_CONTAINS(msg, "element type");
  EXPECT_CONTAINS(msg, "0x0d");
}

TEST_F(IdxBad, WrongRank) {
  // A labels file where images are expected, and the other way round.
  write_raw(path("labels"), make_idx({4}, bytes(4, 1)));
  write_raw(path("images"), make_idx({1, 2, 2}, bytes(4, 1)));
  std::string msg = read_idx_error(path("labels"), 3);
  EXPECT_CONTAINS(msg, path("labels"));
  EXPECT_CONTAINS(msg, "1 dimensions, expected 3");
  msg = read_idx_error(path("images"), 1);
  EXPECT_CONTAINS(msg, path("images"));
  EXPECT_CONTAINS(msg, "3 dimensions, expected 1");
}

TEST_F(IdxBad, ZeroDimension) {
  write_raw(path("zero"), make_idx({3, 0, 4}, {}));
  const std::string msg = read_idx_error(path("zero"), 3);
  EXPECT_CONTAINS(msg, path("zero"));
  EXPECT_CONTAINS(msg, "dimension 1 is zero");
}

TEST_F(IdxBad, TruncatedHeader) {
  bytes file = make_idx({3, 2, 2}, bytes(12, 5));
  file.resize(4 + 4 + 2); // magic, first dimension, half of the second
  write_raw(path("short"), file);
  write_gz(path("short.gz"), file);
  for (const char* name : {"short", "short.gz"}) {
    SCOPED_TRACE(name);
    const std::string msg = read_idx_error(path(name), 3);
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "truncated IDX header");
  }
  // Shorter than the magic number itself.
  write_raw(path("tiny"), bytes{0, 0, 8});
  const std::string msg = read_idx_error(path("tiny"), 3);
  EXPECT_CONTAINS(msg, path("tiny"));
  EXPECT_CONTAINS(msg, "shorter than its 4-byte magic");
}

TEST_F(IdxBad, TruncatedData) {
  bytes file = make_idx({3, 2, 2}, image_bytes(12));
  file.pop_back();
  write_raw(path("short"), file);
  write_gz(path("short.gz"), file);
  for (const char* name : {"short", "short.gz"}) {
    SCOPED_TRACE(name);
    const std::string msg = read_idx_error(path(name), 3);
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "truncated IDX data");
    EXPECT_CONTAINS(msg, "announces 12 bytes, file holds 11");
  }
}

TEST_F(IdxBad, TrailingBytes) {
  bytes file = make_idx({3}, bytes{1, 2, 3});
  file.push_back(0);
  write_raw(path("long"), file);
  write_gz(path("long.gz"), file);
  for (const char* name : {"long", "long.gz"}) {
    SCOPED_TRACE(name);
    const std::string msg = read_idx_error(path(name), 1);
    EXPECT_CONTAINS(msg, path(name));
    EXPECT_CONTAINS(msg, "trailing");
  }
}

TEST_F(IdxBad, CorruptedGzipStream) {
  // A few kilobytes so that the compressed stream has a body to damage.
  write_gz(path("ok.gz"), make_idx({64, 8, 8}, image_bytes(64 * 8 * 8)));
  const bytes good = read_all(path("ok.gz"));
  ASSERT_GT(good.size(), 1000u);
  std::vector<std::size_t> dims;
  ASSERT_EQ(nt::read_idx(path("ok.gz"), 3, dims).size(), 64u * 8 * 8);

  // Damaged bytes in the middle of the deflate stream.
  bytes damaged = good;
  for (std::size_t i = good.size() / 2; i < good.size() / 2 + 16; ++i)
    damaged[i] = static_cast<std::uint8_t>(damaged[i] ^ 0xa5);
  write_raw(path("damaged.gz"), damaged);
  std::string msg = read_idx_error(path("damaged.gz"), 3);
  EXPECT_CONTAINS(msg, path("damaged.gz"));
  EXPECT_CONTAINS(msg, "IDX data");

  // A damaged CRC trailer: the data decompress, the check fails.
  bytes bad_crc = good;
  bad_crc[good.size() - 8] = static_cast<std::uint8_t>(bad_crc[good.size() - 8] ^ 0xff);
  write_raw(path("crc.gz"), bad_crc);
  msg = read_idx_error(path("crc.gz"), 3);
  EXPECT_CONTAINS(msg, path("crc.gz"));
  EXPECT_CONTAINS(msg, "cannot read IDX data");

  // A compressed stream cut in half.
  bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2));
  write_raw(path("cut.gz"), cut);
  msg = read_idx_error(path("cut.gz"), 3);
  EXPECT_CONTAINS(msg, path("cut.gz"));
  EXPECT_CONTAINS(msg, "IDX data");
}

TEST_F(IdxBad, ImageLabelCountMismatch) {
  write_raw(path("images"), make_idx({3, 2, 2}, bytes(12, 9)));
  write_raw(path("labels"), make_idx({4}, bytes{0, 1, 0, 1}));
  const std::string msg = error_of([&] { nt::read_idx_pair(path("images"), path("labels")); });
  EXPECT_CONTAINS(msg, path("images"));
  EXPECT_CONTAINS(msg, path("labels"));
  EXPECT_CONTAINS(msg, "3 images");
  EXPECT_CONTAINS(msg, "4 labels");
}

TEST_F(IdxBad, PairReportsTheBadFile) {
  write_raw(path("images"), make_idx({2, 2, 2}, bytes(8, 9)));
  bytes labels = make_idx({2}, bytes{0, 1});
  labels.push_back(1);
  write_raw(path("labels"), labels);
  const std::string msg = error_of([&] { nt::read_idx_pair(path("images"), path("labels")); });
  EXPECT_CONTAINS(msg, path("labels"));
  EXPECT_CONTAINS(msg, "trailing");
}

// ---------------------------------------------------------------------------
// Locating the files

using LocateIdx = temp_dir_test;

TEST_F(LocateIdx, AcceptsGzipAndRawNamesPreferringGzip) {
  write_raw(path("train-images-idx3-ubyte.gz"), {});
  write_raw(path("train-images-idx3-ubyte"), {});
  write_raw(path("train-labels-idx1-ubyte"), {});
  write_raw(path("t10k-images-idx3-ubyte.gz"), {});
  write_raw(path("t10k-labels-idx1-ubyte"), {});
  const nt::idx_files f = nt::locate_idx_files(dir_.string());
  EXPECT_EQ(f.train_images, path("train-images-idx3-ubyte.gz"));
  EXPECT_EQ(f.train_labels, path("train-labels-idx1-ubyte"));
  EXPECT_EQ(f.test_images, path("t10k-images-idx3-ubyte.gz"));
  EXPECT_EQ(f.test_labels, path("t10k-labels-idx1-ubyte"));
}

TEST_F(LocateIdx, NamesTheDirectoryAndTheMissingFile) {
  write_raw(path("train-images-idx3-ubyte.gz"), {});
  write_raw(path("train-labels-idx1-ubyte.gz"), {});
  write_raw(path("t10k-images-idx3-ubyte.gz"), {});
  // A directory with the right name does not count as the file.
  fs::create_directory(dir_ / "t10k-labels-idx1-ubyte");
  const std::string msg = error_of([&] { nt::locate_idx_files(dir_.string()); });
  EXPECT_CONTAINS(msg, dir_.string());
  EXPECT_CONTAINS(msg, "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(msg.find("train-images"), std::string::npos) << msg;
}

TEST_F(LocateIdx, EmptyDirectory) {
  const std::string msg = error_of([&] { nt::locate_idx_files(dir_.string()); });
  EXPECT_CONTAINS(msg, dir_.string());
  EXPECT_CONTAINS(msg, "train-images-idx3-ubyte");
}

TEST(FashionMnist, PackageDirectoryHoldsTheFourFiles) {
  const std::string dir = nt::fashion_mnist_dir();
  ASSERT_FALSE(dir.empty());
  EXPECT_TRUE(fs::is_directory(dir)) << dir;
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    EXPECT_TRUE(fs::is_regular_file(fs::path{dir} / name)) << dir << "/" << name;
  const nt::idx_files f = nt::locate_idx_files(dir);
  EXPECT_EQ(f.train_images, dir + "/train-images-idx3-ubyte.gz");
}

TEST(FashionMnist, TrainAndTestSetsHaveTheKnownShape) {
  const nt::idx_files f = nt::locate_idx_files(nt::fashion_mnist_dir());
  const nt::image_set train = nt::read_idx_pair(f.train_images, f.train_labels);
  EXPECT_EQ(train.size(), 60000u);
  EXPECT_EQ(train.features, 784u);
  EXPECT_EQ(train.classes, 10u);
  EXPECT_EQ(train.pixels.size(), 60000u * 784u);
  // Fashion-MNIST is balanced: 6000 training images per class.
  std::vector<std::size_t> count(10, 0);
  for (auto l : train.labels)
    ++count.at(l);
  for (std::size_t c = 0; c < 10; ++c)
    EXPECT_EQ(count[c], 6000u) << "class " << c;

  const nt::image_set test = nt::read_idx_pair(f.test_images, f.test_labels);
  EXPECT_EQ(test.size(), 10000u);
  EXPECT_EQ(test.features, 784u);
  EXPECT_EQ(test.classes, 10u);
}

// ---------------------------------------------------------------------------
// Validation split

TEST(SplitValidation, SizesDisjointSortedWithinPool) {
  std::vector<std::uint32_t> train;
  std::vector<std::uint32_t> val;
  nt::split_validation(1000, 150, 0, 42, train, val);
  EXPECT_EQ(val.size(), 150u);
  EXPECT_EQ(train.size(), 850u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_TRUE(std::is_sorted(val.begin(), val.end()));
  std::set<std::uint32_t> all(train.begin(), train.end());
  EXPECT_EQ(all.size(), train.size()); // no duplicates
  for (auto v : val)
    EXPECT_TRUE(all.insert(v).second) << v << " is in both splits";
  EXPECT_EQ(all.size(), 1000u); // together they are the whole pool
  EXPECT_LT(*all.rbegin(), 1000u);
  // The validation split is a random sample, not the first or last block.
  EXPECT_NE(val.back() - val.front(), 149u);
}

TEST(SplitValidation, TrainLimitIsRespected) {
  std::vector<std::uint32_t> train;
  std::vector<std::uint32_t> val;
  nt::split_validation(1000, 100, 300, 5, train, val);
  EXPECT_EQ(train.size(), 300u);
  EXPECT_EQ(val.size(), 100u);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  std::set<std::uint32_t> all(train.begin(), train.end());
  all.insert(val.begin(), val.end());
  EXPECT_EQ(all.size(), 400u);
  EXPECT_LT(*all.rbegin(), 1000u);
  // The validation split does not depend on the limit.
  std::vector<std::uint32_t> train_all;
  std::vector<std::uint32_t> val_all;
  nt::split_validation(1000, 100, 0, 5, train_all, val_all);
  EXPECT_EQ(val, val_all);
  // A limit above what is left changes nothing.
  nt::split_validation(1000, 100, 5000, 5, train, val);
  EXPECT_EQ(train, train_all);
}

TEST(SplitValidation, DeterministicInSeedAndDifferentAcrossSeeds) {
  std::vector<std::uint32_t> t1, v1, t2, v2, t3, v3;
  nt::split_validation(500, 50, 0, 9, t1, v1);
  nt::split_validation(500, 50, 0, 9, t2, v2);
  nt::split_validation(500, 50, 0, 10, t3, v3);
  EXPECT_EQ(t1, t2);
  EXPECT_EQ(v1, v2);
  EXPECT_NE(v1, v3);
  EXPECT_NE(t1, t3);
}

TEST(SplitValidation, ValidationAtLeastPoolThrows) {
  std::vector<std::uint32_t> train;
  std::vector<std::uint32_t> val;
  std::string msg = error_of([&] { nt::split_validation(100, 100, 0, 1, train, val); });
  EXPECT_CONTAINS(msg, "data.validation_size");
  msg = error_of([&] { nt::split_validation(100, 250, 0, 1, train, val); });
  EXPECT_CONTAINS(msg, "250");
  // One training sample left is fine.
  nt::split_validation(100, 99, 0, 1, train, val);
  EXPECT_EQ(train.size(), 1u);
}

// ---------------------------------------------------------------------------
// Shards

TEST(ValidationSubset, TheFirstLimitSamplesOrAllOfThem) {
  const std::vector<std::uint32_t> v{3, 8, 9, 14, 20};
  EXPECT_EQ(nt::validation_subset(v, 0), v) << "0 means the whole split";
  EXPECT_EQ(nt::validation_subset(v, 2), (std::vector<std::uint32_t>{3, 8}));
  EXPECT_EQ(nt::validation_subset(v, 5), v);
  EXPECT_EQ(nt::validation_subset(v, 99), v) << "a limit above the split takes all of it";
  EXPECT_EQ(nt::validation_subset_size(5000, 0), 5000u);
  EXPECT_EQ(nt::validation_subset_size(5000, 1000), 1000u);
  EXPECT_EQ(nt::validation_subset_size(500, 1000), 500u);
}

TEST(ShardIndices, ShardsPartitionInOrderWithNearEqualSizes) {
  std::vector<std::uint32_t> idx;
  for (std::uint32_t i = 0; i < 103; ++i)
    idx.push_back(i * 3 + 1);
  for (std::size_t replicas : {1u, 2u, 4u, 7u, 103u}) {
    SCOPED_TRACE(replicas);
    std::vector<std::uint32_t> joined;
    std::size_t smallest = idx.size();
    std::size_t largest = 0;
    for (std::size_t r = 0; r < replicas; ++r) {
      const auto part = nt::shard_indices(idx, replicas, r);
      smallest = std::min(smallest, part.size());
      largest = std::max(largest, part.size());
      joined.insert(joined.end(), part.begin(), part.end());
    }
    EXPECT_EQ(joined, idx); // contiguous, disjoint, complete
    EXPECT_LE(largest - smallest, 1u);
  }
}

TEST(ShardIndices, MoreShardsThanSamples) {
  const std::vector<std::uint32_t> idx{4, 5, 6};
  std::size_t total = 0;
  for (std::size_t r = 0; r < 5; ++r)
    total += nt::shard_indices(idx, 5, r).size();
  EXPECT_EQ(total, 3u);
}

TEST(ShardIndices, InvalidShardThrows) {
  const std::vector<std::uint32_t> idx{1, 2, 3, 4};
  EXPECT_CONTAINS(error_of([&] { nt::shard_indices(idx, 4, 4); }), "shard 4 of 4");
  EXPECT_CONTAINS(error_of([&] { nt::shard_indices(idx, 0, 0); }), "does not exist");
}

TEST(ShardRng, DeterministicPerSeedAndShard) {
  auto first = [](std::uint64_t seed, std::size_t shard) {
    nt::rng g = nt::shard_rng(seed, shard);
    std::vector<std::uint64_t> out;
    for (int i = 0; i < 8; ++i)
      out.push_back(g.next());
    return out;
  };
  EXPECT_EQ(first(3, 0), first(3, 0));
  EXPECT_EQ(first(3, 2), first(3, 2));
  EXPECT_NE(first(3, 0), first(3, 1));
  EXPECT_NE(first(3, 0), first(4, 0));
  // Shuffling with equal generators gives equal orders.
  std::vector<std::uint32_t> a(50);
  for (std::uint32_t i = 0; i < 50; ++i)
    a[i] = i;
  auto b = a;
  nt::rng ga = nt::shard_rng(8, 1);
  nt::rng gb = nt::shard_rng(8, 1);
  nt::shuffle(a, ga);
  nt::shuffle(b, gb);
  EXPECT_EQ(a, b);
  EXPECT_FALSE(std::is_sorted(a.begin(), a.end()));
}

// ---------------------------------------------------------------------------
// Batches

TEST(GatherBatch, ScalesBytesAndCopiesLabels) {
  nt::image_set set;
  set.features = 3;
  set.classes = 4;
  set.pixels = {0, 1, 2, 255, 128, 64, 10, 20, 30, 200, 100, 50};
  set.labels = {0, 3, 1, 2};
  const std::vector<std::uint32_t> idx{3, 1, 1};
  nt::matrix x;
  std::uint8_t labels[3] = {};
  nt::gather_batch(set, idx.data(), idx.size(), x, labels);
  ASSERT_EQ(x.rows(), 3);
  ASSERT_EQ(x.cols(), 3);
  for (std::size_t i = 0; i < idx.size(); ++i) {
    EXPECT_EQ(labels[i], set.labels[idx[i]]);
    for (std::size_t j = 0; j < 3; ++j)
      EXPECT_FLOAT_EQ(x(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)),
                      static_cast<float>(set.pixels[idx[i] * 3 + j]) / 255.0f);
  }
  EXPECT_EQ(x(1, 0), 1.0f); // 255 maps to exactly one

  // Same shape: no reallocation; other shape: resized.
  const float* before = x.data();
  const std::vector<std::uint32_t> idx2{0, 2, 3};
  nt::gather_batch(set, idx2.data(), idx2.size(), x, labels);
  EXPECT_EQ(x.data(), before);
  EXPECT_EQ(x(0, 0), 0.0f);
  EXPECT_EQ(labels[0], 0);
  EXPECT_EQ(labels[2], 2);
  nt::gather_batch(set, idx2.data(), 1, x, labels);
  EXPECT_EQ(x.rows(), 1);
  EXPECT_EQ(x.cols(), 3);
}

// ---------------------------------------------------------------------------
// Synthetic data

TEST(MakeSynthetic, ShapeLabelsAndDeterminism) {
  const nt::image_set a = nt::make_synthetic(500, 20, 4, 0.2f, 77);
  EXPECT_EQ(a.size(), 500u);
  EXPECT_EQ(a.features, 20u);
  EXPECT_EQ(a.classes, 4u);
  EXPECT_EQ(a.pixels.size(), 500u * 20u);
  std::set<std::uint8_t> seen;
  for (auto l : a.labels) {
    EXPECT_LT(l, 4);
    seen.insert(l);
  }
  EXPECT_EQ(seen.size(), 4u);
  const nt::image_set b = nt::make_synthetic(500, 20, 4, 0.2f, 77);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.labels, b.labels);
  const nt::image_set c = nt::make_synthetic(500, 20, 4, 0.2f, 78);
  EXPECT_NE(a.pixels, c.pixels);
  // Without noise every sample sits exactly on its class centre.
  const nt::image_set d = nt::make_synthetic(100, 20, 4, 0.0f, 77);
  for (std::size_t i = 1; i < d.size(); ++i)
    if (d.labels[i] == d.labels[0]) {
      EXPECT_TRUE(std::equal(d.pixels.begin(), d.pixels.begin() + 20,
                             d.pixels.begin() + static_cast<std::ptrdiff_t>(i * 20)));
    }
}

TEST(MakeSynthetic, BadArgumentsThrow) {
  EXPECT_THROW(nt::make_synthetic(0, 10, 3, 0.1f, 1), nt::error);
  EXPECT_THROW(nt::make_synthetic(10, 0, 3, 0.1f, 1), nt::error);
  EXPECT_THROW(nt::make_synthetic(10, 10, 1, 0.1f, 1), nt::error);
  EXPECT_THROW(nt::make_synthetic(10, 10, 257, 0.1f, 1), nt::error);
  EXPECT_NO_THROW(nt::make_synthetic(10, 10, 256, 0.1f, 1));
}

} // namespace
