#include "nettorrent/checkpoint.hpp"

#include <fstream>
#include <sstream>

#include "checkpoint_format.hpp"
#include "nettorrent/error.hpp"
#include "nettorrent/hash.hpp"
#include "nettorrent/run_support.hpp"

// The byte layout is described in checkpoint_format.hpp.

namespace nettorrent {

namespace checkpoint_format {

void write_frame(std::ostream& os, std::uint64_t magic, std::uint32_t version,
                 const std::string& payload) {
  std::string prefix;
  put_le(prefix, magic);
  put_le(prefix, version);
  put_le(prefix, static_cast<std::uint64_t>(payload.size()));
  std::string checksum;
  put_le(checksum, fnv1a64(payload));
  os.write(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  os.write(payload.data(), static_cast<std::streamsize>(payload.size()));
  os.write(checksum.data(), static_cast<std::streamsize>(checksum.size()));
}

namespace {

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw error(path + ": " + why);
}

/// What a section is called in messages.
struct section_kind {
  std::uint32_t version;
  const char* file;   ///< "checkpoint"
  const char* header; ///< "header"
  const char* format; ///< "checkpoint format"
  const char* sum;    ///< "checksum"
};

constexpr section_kind model_section{checkpoint_version, "checkpoint", "header",
                                     "checkpoint format", "checksum"};
constexpr section_kind run_section{run_state_version, "run checkpoint", "run-state header",
                                   "run-state format", "run-state checksum"};

/// True if the bytes from `pos` on are a proper prefix of `magic`.
bool cut_magic(const std::string& file, std::size_t pos, std::uint64_t magic) {
  std::string m;
  put_le(m, magic);
  const std::size_t n = file.size() - pos;
  return n > 0 && n < m.size() && m.compare(0, n, file, pos, n) == 0;
}

/// Checks the framing of the section of `kind` that starts at `pos` (its
/// magic already matched): header, version, size, checksum. Returns the
/// payload; `end` receives the byte after the section.
std::string read_section(const std::string& path, const std::string& file, std::size_t pos,
                         const section_kind& kind, std::size_t& end) {
  const std::string file_kind = kind.file;
  const std::size_t left = file.size() - pos;
  if (left < prefix_bytes)
    refuse(path, "truncated " + file_kind + " (" + kind.header + " incomplete)");
  const auto version = get_le<std::uint32_t>(file, pos + 8);
  if (version != kind.version)
    refuse(path, std::string{"unsupported "} + kind.format + " version " + std::to_string(version)
                     + " (this build reads version " + std::to_string(kind.version) + ")");
  const auto size = get_le<std::uint64_t>(file, pos + 12);
  if (left < prefix_bytes + 8 || size > left - prefix_bytes - 8)
    refuse(path, "truncated " + file_kind + ": " + kind.header + " announces "
                     + std::to_string(size) + " payload bytes, file has "
                     + std::to_string(file.size()) + " bytes in all");
  std::string payload = file.substr(pos + prefix_bytes, size);
  if (fnv1a64(payload) != get_le<std::uint64_t>(file, pos + prefix_bytes + size))
    refuse(path, "corrupted " + file_kind + " (" + kind.sum + " mismatch)");
  end = pos + prefix_bytes + size + 8;
  return payload;
}

} // namespace

file_sections read_sections(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw error(path + ": cannot open checkpoint");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  if (cut_magic(file, 0, checkpoint_magic))
    refuse(path, "truncated checkpoint (shorter than its magic number)");
  if (file.size() < 8 || get_le<std::uint64_t>(file, 0) != checkpoint_magic)
    refuse(path, "not a NetTorrent checkpoint (bad magic number)");
  file_sections out;
  std::size_t end = 0;
  out.model = read_section(path, file, 0, model_section, end);
  out.model_version = checkpoint_version;
  // Bytes after the model section are a run-state section or an error.
  if (cut_magic(file, end, run_state_magic))
    refuse(path, "truncated run checkpoint (shorter than its run-state magic number)");
  if (file.size() - end >= 8 && get_le<std::uint64_t>(file, end) == run_state_magic) {
    out.has_run_state = true;
    out.run_state = read_section(path, file, end, run_section, end);
    if (end != file.size())
      refuse(path, "run checkpoint has " + std::to_string(file.size() - end)
                       + " unexpected trailing bytes");
  } else if (end != file.size()) {
    refuse(path,
           "checkpoint has " + std::to_string(file.size() - end) + " unexpected trailing bytes");
  }
  return out;
}

std::string encode_model(const model_checkpoint& ck) {
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
    save_layers(ar, ck.layers);
  }
  return os.str();
}

void decode_model(const std::string& payload, model_checkpoint& ck) {
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
  load_layers(ar, ck.layers, h.layers, payload.size());
  if (is.peek() != std::char_traits<char>::eof())
    throw error("unexpected bytes after the last layer");
}

} // namespace checkpoint_format

using namespace checkpoint_format;

void save_checkpoint(const std::string& path, const model_checkpoint& ck) {
  write_file_atomically(path, [&](std::ostream& os) {
    write_frame(os, checkpoint_magic, ck.header.version, encode_model(ck));
  });
}

model_checkpoint load_checkpoint(const std::string& path) {
  const file_sections s = read_sections(path);
  model_checkpoint ck;
  ck.header.version = s.model_version;
  decode_or_fail(path, "checkpoint", [&] { decode_model(s.model, ck); });
  return ck;
}

} // namespace nettorrent
