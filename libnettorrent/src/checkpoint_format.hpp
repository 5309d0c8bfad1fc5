// Private to libnettorrent: the byte layout shared by model checkpoints
// (checkpoint.cpp) and run checkpoints (run_checkpoint.cpp).
//
// A file is one or two sections, each framed the same way (integers
// little-endian):
//
//   u64 magic | u32 version | u64 payload bytes | payload | u64 FNV-1a 64(payload)
//
//   1. the model section: magic "NTCKPT\0\1", version 1, the model payload
//      (checkpoint_header fields and every layer). A model checkpoint
//      (model.ckpt) is this section alone, byte for byte as before version 2.
//   2. run checkpoints only (format version 2): the run-state section, magic
//      "NTRUN\0\0\2", version 2, the run_state payload (run_checkpoint.cpp).
//
// Payloads are Cereal portable-binary archives; floats are written
// little-endian. Every length read from a payload is checked against the
// payload's size before anything is allocated.
#pragma once

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "nettorrent/checkpoint.hpp"
#include "nettorrent/error.hpp"

namespace nettorrent {

template <class Archive>
void serialize(Archive& ar, optimizer_state& s) {
  ar(s.m, s.v, s.steps);
}

namespace checkpoint_format {

/// "NTRUN\0\0\2" read as a little-endian 64-bit number.
inline constexpr std::uint64_t run_state_magic = 0x0200'004e'5552'544eULL;
inline constexpr std::uint32_t run_state_version = 2;

/// u64 magic + u32 version + u64 payload bytes.
inline constexpr std::size_t prefix_bytes = 8 + 4 + 8;

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

/// Writes one framed section to `os`: prefix, payload, checksum.
void write_frame(std::ostream& os, std::uint64_t magic, std::uint32_t version,
                 const std::string& payload);

/// The payloads of a checkpoint file, each section's framing checked.
struct file_sections {
  std::uint32_t model_version = 0;
  std::string model; ///< the model payload
  bool has_run_state = false;
  std::string run_state; ///< the run-state payload (run checkpoints only)
};

/// Reads `path` and checks the framing (magic, version, sizes, checksums) of
/// its sections. Throws nettorrent::error naming the file and the reason.
file_sections read_sections(const std::string& path);

/// The model payload of `ck`, and back. decode_model throws
/// nettorrent::error or cereal::Exception on a malformed payload.
std::string encode_model(const model_checkpoint& ck);
void decode_model(const std::string& payload, model_checkpoint& ck);

/// Turns a decoder's failure into the error load_checkpoint and
/// load_run_checkpoint report: "PATH: malformed ...: reason".
template <class F>
void decode_or_fail(const std::string& path, const char* what, F&& decode) {
  try {
    decode();
  } catch (const cereal::Exception& e) {
    throw error(path + ": malformed " + what + " payload: " + e.what());
  } catch (const error& e) {
    throw error(path + ": malformed " + what + ": " + e.what());
  }
}

// --- pieces of payloads ----------------------------------------------------------

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

/// A std::string written by Cereal's string serializer, checked like
/// load_vector.
template <class Archive>
void load_string(Archive& ar, std::string& s, std::size_t payload_bytes) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  if (n > payload_bytes)
    throw error("text of " + std::to_string(n) + " bytes exceeds the file size");
  s.resize(static_cast<std::size_t>(n));
  ar(cereal::binary_data(s.data(), s.size()));
}

/// A count written as u64 that announces `n` items of at least
/// `min_item_bytes` each; throws if the payload cannot hold them.
template <class Archive>
std::uint64_t load_count(Archive& ar, std::size_t payload_bytes, std::size_t min_item_bytes,
                         const char* what) {
  std::uint64_t n = 0;
  ar(n);
  if (n > payload_bytes / min_item_bytes)
    throw error(std::to_string(n) + " " + what + " exceed the file size");
  return n;
}

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

template <class Archive>
void load_state(Archive& ar, optimizer_state& s, std::size_t payload_bytes) {
  load_vector(ar, s.m, payload_bytes);
  load_vector(ar, s.v, payload_bytes);
  ar(s.steps);
}

/// The layers of one model: parameters and optimizer state, layer by layer
/// (no count: the widths say how many).
template <class Archive>
void save_layers(Archive& ar, const std::vector<layer_state>& layers) {
  for (const auto& l : layers) {
    save_matrix(ar, l.params.w);
    save_matrix(ar, l.params.b);
    ar(l.w_state, l.b_state);
  }
}

/// Reads widths.size() - 1 layers written by save_layers and checks each
/// against the widths (`widths[i]` x `widths[i + 1]`, optimizer state of
/// the parameters' size or empty).
template <class Archive>
void load_layers(Archive& ar, std::vector<layer_state>& layers,
                 const std::vector<std::uint64_t>& widths, std::size_t payload_bytes) {
  const std::uint64_t max_elems = payload_bytes / sizeof(float) + 1;
  layers.resize(widths.size() - 1);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto& l = layers[i];
    load_matrix(ar, l.params.w, max_elems);
    load_matrix(ar, l.params.b, max_elems);
    load_state(ar, l.w_state, payload_bytes);
    load_state(ar, l.b_state, payload_bytes);
    const auto in = static_cast<Eigen::Index>(widths[i]);
    const auto out = static_cast<Eigen::Index>(widths[i + 1]);
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
}

} // namespace checkpoint_format
} // namespace nettorrent
