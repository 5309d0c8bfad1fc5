#include "nettorrent/run_support.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <streambuf>

#include "nettorrent/error.hpp"

namespace nettorrent {

data_splits load_run_data(const run_config& cfg) {
  const std::string dir = cfg.data.dir.empty() ? fashion_mnist_dir() : cfg.data.dir;
  const idx_files files = locate_idx_files(dir);
  data_splits d;
  d.train_pool = read_idx_pair(files.train_images, files.train_labels);
  d.test = read_idx_pair(files.test_images, files.test_labels);
  const std::size_t inputs = cfg.model.layers.front();
  const std::size_t classes = cfg.model.layers.back();
  if (d.train_pool.features != inputs)
    throw error(files.train_images + ": images have " + std::to_string(d.train_pool.features)
                + " pixels but model.layers starts with " + std::to_string(inputs));
  if (d.test.features != inputs)
    throw error(files.test_images + ": images have " + std::to_string(d.test.features)
                + " pixels but model.layers starts with " + std::to_string(inputs));
  if (d.train_pool.classes > classes || d.test.classes > classes)
    throw error(dir + ": labels go up to "
                + std::to_string(std::max(d.train_pool.classes, d.test.classes) - 1)
                + " but model.layers ends with " + std::to_string(classes) + " classes");
  split_validation(d.train_pool.size(), cfg.data.validation_size, cfg.data.train_limit,
                   cfg.training.seed, d.train, d.validation);
  if (d.train.size() < cfg.training.batch_size)
    throw error("training split has " + std::to_string(d.train.size())
                + " samples, fewer than training.batch_size = "
                + std::to_string(cfg.training.batch_size));
  return d;
}

void check_shard_sizes(const run_config& cfg, std::size_t train_size) {
  const std::size_t r = cfg.topology.replicas;
  const std::size_t smallest = train_size / r;
  if (smallest < cfg.training.batch_size)
    throw error("topology.replicas = " + std::to_string(r) + " cuts the "
                + std::to_string(train_size) + " training samples into shards of "
                + std::to_string(smallest) + ", fewer than one batch (training.batch_size = "
                + std::to_string(cfg.training.batch_size) + "): use fewer replicas or more data");
}

void write_curve_csv(const std::string& path, const std::vector<curve_point>& curve) {
  write_file_atomically(path, [&](std::ostream& os) {
    os << "epoch,samples,seconds,train_loss,validation_loss,validation_accuracy\n";
    for (const auto& p : curve)
      os << p.epoch << ',' << p.samples << ',' << p.seconds << ',' << p.train_loss << ','
         << p.validation_loss << ',' << p.validation_accuracy << '\n';
  });
}

namespace {

/// An output buffer straight into a file descriptor, so a file is written
/// as it is produced instead of being built in memory first (a run
/// checkpoint held two or three copies of itself before). A failed write
/// keeps its errno and fails the stream.
class fd_buf : public std::streambuf {
public:
  explicit fd_buf(int fd) : fd_(fd) { setp(buf_, buf_ + sizeof buf_); }
  int saved_errno() const noexcept { return errno_; }

protected:
  int_type overflow(int_type c) override {
    if (!drain())
      return traits_type::eof();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n >= static_cast<std::streamsize>(sizeof buf_)) { // large blocks skip the buffer
      if (!drain() || !write_all(s, static_cast<std::size_t>(n)))
        return 0;
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }
  int sync() override { return drain() ? 0 : -1; }

private:
  bool drain() {
    const auto n = static_cast<std::size_t>(pptr() - pbase());
    setp(buf_, buf_ + sizeof buf_);
    return n == 0 || write_all(buf_, n);
  }
  bool write_all(const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t k = ::write(fd_, p, n);
      if (k < 0) {
        if (errno == EINTR)
          continue;
        errno_ = errno;
        return false;
      }
      p += k;
      n -= static_cast<std::size_t>(k);
    }
    return true;
  }
  int fd_;
  int errno_ = 0;
  char buf_[1 << 16];
};

} // namespace

void write_file_atomically(const std::string& path,
                           const std::function<void(std::ostream&)>& writer) {
  namespace fs = std::filesystem;
  const fs::path target{path};
  std::error_code ec;
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec)
      throw error(path + ": cannot create directory " + target.parent_path().string() + ": "
                  + ec.message());
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    throw error(path + ": cannot create " + tmp + ": " + std::strerror(errno));
  auto fail = [&](const char* what, int err) {
    const std::string reason = std::strerror(err);
    ::close(fd);
    ::unlink(tmp.c_str());
    throw error(path + ": " + what + ": " + reason);
  };
  {
    fd_buf buf{fd};
    std::ostream os{&buf};
    try {
      writer(os);
    } catch (...) { // nothing half-written stays behind
      ::close(fd);
      ::unlink(tmp.c_str());
      throw;
    }
    os.flush();
    if (!os)
      fail("write failed", buf.saved_errno() != 0 ? buf.saved_errno() : EIO);
  }
  if (::fsync(fd) != 0)
    fail("fsync failed", errno);
  if (::close(fd) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw error(path + ": close failed: " + reason);
  }
  // Test hook: die as a process killed between the temp write and the
  // rename would (see run_support.hpp).
  if (const char* crash = std::getenv("NETTORRENT_TEST_CRASH_BEFORE_RENAME");
      crash != nullptr && std::strcmp(crash, "1") == 0)
    ::_exit(3);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw error(path + ": rename failed: " + reason);
  }
  // Make the rename itself durable.
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void check_output_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  // The nearest existing ancestor decides: it must be a writable directory.
  fs::path p{dir};
  std::error_code ec;
  while (!p.empty() && !fs::exists(p, ec))
    p = p.parent_path();
  if (p.empty())
    p = ".";
  if (!fs::is_directory(p, ec))
    throw error("training.output_dir = \"" + dir + "\": cannot create it, " + p.string()
                + " is not a directory");
  // Really try: access() says yes to root even where writes fail (/proc).
  const fs::path probe = p / (".nettorrent-probe-" + std::to_string(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    throw error("training.output_dir = \"" + dir + "\": cannot write in " + p.string() + ": "
                + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

std::string format_duration(double seconds) {
  if (seconds < 0)
    return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  return buf;
}

std::string format_value(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

} // namespace nettorrent
