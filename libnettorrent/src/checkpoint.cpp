#include "nettorrent/checkpoint.hpp"

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/vector.hpp>

#include <fstream>
#include <sstream>

#include "nettorrent/error.hpp"
#include "nettorrent/hash.hpp"
#include "nettorrent/run_support.hpp"

// File layout (all integers little-endian):
//   u64 magic | u32 version | u64 payload bytes | payload | u64 FNV-1a 64(payload)
// The payload is a Cereal portable-binary archive of the header fields and
// every layer's parameters and optimizer state. Raw floats are written by
// Cereal's portable archive in little-endian order.

namespace nettorrent {

template <class Archive>
void serialize(Archive& ar, optimizer_state& s) {
  ar(s.m, s.v, s.steps);
}

namespace {

template <class Archive, class Mat>
void save_matrix(Archive& ar, const Mat& m) {
  const auto rows = static_cast<std::uint64_t>(m.rows());
  const auto cols = static_cast<std::uint64_t>(m.cols());
  ar(rows, cols);
  ar(cereal::binary_data(m.data(), static_cast<std::size_t>(m.size()) * sizeof(float)));
}

template <class Archive, class Mat>
void load_matrix(Archive& ar, Mat& m, std::uint64_t max_elems) {
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
  ar(rows, cols);
  if (rows > max_elems || cols > max_elems || rows * cols > max_elems)
    throw error("matrix of " + std::to_string(rows) + " x " + std::to_string(cols)
                + " exceeds the file size");
  if constexpr (Mat::RowsAtCompileTime == 1)
    m.resize(static_cast<Eigen::Index>(cols));
  else
    m.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols));
  if (static_cast<std::uint64_t>(m.rows()) != rows)
    throw error("bias with " + std::to_string(rows) + " rows");
  ar(cereal::binary_data(m.data(), static_cast<std::size_t>(m.size()) * sizeof(float)));
}

// Loads a vector written by Cereal's vector serializer (size tag, then the
// elements as binary data), refusing sizes the payload cannot hold before
// allocating: a damaged or hostile size must not exhaust memory.
template <class Archive, class T>
void load_vector(Archive& ar, std::vector<T>& v, std::size_t payload_bytes) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  if (n > payload_bytes / sizeof(T))
    throw error("list of " + std::to_string(n) + " elements exceeds the file size");
  v.resize(static_cast<std::size_t>(n));
  ar(cereal::binary_data(v.data(), v.size() * sizeof(T)));
}

template <class Archive>
void load_state(Archive& ar, optimizer_state& s, std::size_t payload_bytes) {
  load_vector(ar, s.m, payload_bytes);
  load_vector(ar, s.v, payload_bytes);
  ar(s.steps);
}

template <class T>
void put_le(std::string& out, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    out.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
}

template <class T>
T get_le(const std::string& in, std::size_t pos) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v |= std::uint64_t{static_cast<unsigned char>(in[pos + i])} << (8 * i);
  return static_cast<T>(v);
}

constexpr std::size_t prefix_bytes = 8 + 4 + 8;

std::string encode_payload(const model_checkpoint& ck) {
  std::ostringstream os{std::ios::binary};
  {
    cereal::PortableBinaryOutputArchive ar{os};
    const auto& h = ck.header;
    std::vector<std::uint8_t> acts;
    for (auto a : h.activations)
      acts.push_back(static_cast<std::uint8_t>(a));
    ar(h.layers, acts, static_cast<std::uint8_t>(h.optimizer), h.config_hash, h.step, h.samples,
       h.epoch, h.rng_state);
    ar(static_cast<std::uint64_t>(ck.layers.size()));
    for (const auto& l : ck.layers) {
      save_matrix(ar, l.params.w);
      save_matrix(ar, l.params.b);
      ar(l.w_state, l.b_state);
    }
  }
  return os.str();
}

void decode_payload(const std::string& payload, model_checkpoint& ck) {
  std::istringstream is{payload, std::ios::binary};
  cereal::PortableBinaryInputArchive ar{is};
  auto& h = ck.header;
  std::vector<std::uint8_t> acts;
  std::uint8_t opt = 0;
  load_vector(ar, h.layers, payload.size());
  load_vector(ar, acts, payload.size());
  ar(opt, h.config_hash, h.step, h.samples, h.epoch, h.rng_state);
  if (h.layers.size() < 2 || acts.size() != h.layers.size() - 1)
    throw error("inconsistent header: " + std::to_string(h.layers.size()) + " widths, "
                + std::to_string(acts.size()) + " activations");
  for (auto a : acts) {
    if (a > static_cast<std::uint8_t>(activation::sigmoid))
      throw error("unknown activation code " + std::to_string(a));
    h.activations.push_back(static_cast<activation>(a));
  }
  if (opt > static_cast<std::uint8_t>(optimizer_kind::adam))
    throw error("unknown optimizer code " + std::to_string(opt));
  h.optimizer = static_cast<optimizer_kind>(opt);
  std::uint64_t n = 0;
  ar(n);
  if (n != h.layers.size() - 1)
    throw error("header announces " + std::to_string(h.layers.size() - 1) + " layers, file holds "
                + std::to_string(n));
  const std::uint64_t max_elems = payload.size() / sizeof(float) + 1;
  ck.layers.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    auto& l = ck.layers[i];
    load_matrix(ar, l.params.w, max_elems);
    load_matrix(ar, l.params.b, max_elems);
    load_state(ar, l.w_state, payload.size());
    load_state(ar, l.b_state, payload.size());
    const auto in = static_cast<Eigen::Index>(h.layers[i]);
    const auto out = static_cast<Eigen::Index>(h.layers[i + 1]);
    if (l.params.w.rows() != in || l.params.w.cols() != out || l.params.b.size() != out)
      throw error("layer " + std::to_string(i) + " has shape " + std::to_string(l.params.w.rows())
                  + " x " + std::to_string(l.params.w.cols()) + ", header says "
                  + std::to_string(in) + " x " + std::to_string(out));
    auto check_state = [&](const optimizer_state& s, std::size_t size, const char* what) {
      if ((!s.m.empty() && s.m.size() != size) || (!s.v.empty() && s.v.size() != size))
        throw error("layer " + std::to_string(i) + ": optimizer state of " + what
                    + " has the wrong size");
    };
    check_state(l.w_state, static_cast<std::size_t>(l.params.w.size()), "W");
    check_state(l.b_state, static_cast<std::size_t>(l.params.b.size()), "b");
  }
  if (is.peek() != std::char_traits<char>::eof())
    throw error("unexpected bytes after the last layer");
}

} // namespace

void save_checkpoint(const std::string& path, const model_checkpoint& ck) {
  const std::string payload = encode_payload(ck);
  std::string file;
  file.reserve(payload.size() + prefix_bytes + 8);
  put_le(file, checkpoint_magic);
  put_le(file, ck.header.version);
  put_le(file, static_cast<std::uint64_t>(payload.size()));
  file += payload;
  put_le(file, fnv1a64(payload));
  write_file_atomically(path, [&](std::ostream& os) {
    os.write(file.data(), static_cast<std::streamsize>(file.size()));
  });
}

model_checkpoint load_checkpoint(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw error(path + ": cannot open checkpoint");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  const auto fail = [&](const std::string& why) -> model_checkpoint {
    throw error(path + ": " + why);
  };
  std::string magic;
  put_le(magic, checkpoint_magic);
  if (!file.empty() && file.size() < magic.size() && magic.compare(0, file.size(), file) == 0)
    return fail("truncated checkpoint (shorter than its magic number)");
  if (file.size() < 8 || get_le<std::uint64_t>(file, 0) != checkpoint_magic)
    return fail("not a NetTorrent checkpoint (bad magic number)");
  if (file.size() < prefix_bytes)
    return fail("truncated checkpoint (header incomplete)");
  const auto version = get_le<std::uint32_t>(file, 8);
  if (version != checkpoint_version)
    return fail("unsupported checkpoint format version " + std::to_string(version)
                + " (this build reads version " + std::to_string(checkpoint_version) + ")");
  const auto size = get_le<std::uint64_t>(file, 12);
  if (file.size() < prefix_bytes + 8 || size > file.size() - prefix_bytes - 8)
    return fail("truncated checkpoint: header announces " + std::to_string(size)
                + " payload bytes, file has " + std::to_string(file.size()) + " bytes in all");
  if (size != file.size() - prefix_bytes - 8)
    return fail("checkpoint has " + std::to_string(file.size() - prefix_bytes - 8 - size)
                + " unexpected trailing bytes");
  const std::string payload = file.substr(prefix_bytes, size);
  if (fnv1a64(payload) != get_le<std::uint64_t>(file, prefix_bytes + size))
    return fail("corrupted checkpoint (checksum mismatch)");
  model_checkpoint ck;
  ck.header.version = version;
  try {
    decode_payload(payload, ck);
  } catch (const cereal::Exception& e) {
    return fail(std::string{"malformed checkpoint payload: "} + e.what());
  } catch (const error& e) {
    return fail(std::string{"malformed checkpoint: "} + e.what());
  }
  return ck;
}

} // namespace nettorrent
