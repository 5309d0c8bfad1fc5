#include "tls_shim.hpp"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace nettorrent {
namespace {

std::mutex sink_mutex;
std::function<void(const std::string&)> sink; // guarded by sink_mutex
std::atomic<unsigned long> failures{0};       ///< failed handshakes, both directions

/// Lines after this many refusals are thinned out (every 100th), so a peer
/// that retries in a loop cannot flood the log.
constexpr unsigned long log_every_refusal_up_to = 50;

std::string address_of_socket(const SSL* ssl) {
  const int fd = SSL_get_fd(ssl);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (fd < 0 || ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return "an unknown peer";
  char host[INET6_ADDRSTRLEN] = {};
  unsigned port = 0;
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    return std::string{host} + ':' + std::to_string(port);
  }
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return '[' + std::string{host} + "]:" + std::to_string(port);
  }
  return "a non-IP peer";
}

/// What we keep with each SSL object (in an ex_data slot of our own): the
/// peer's address, read on the first handshake call (a peer that aborts
/// has closed its socket by the time the failure is known), and whether
/// its failure was reported (CAF may call SSL_accept again after one).
struct peer_record {
  std::string address;
  bool reported = false;
};

void free_record(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<peer_record*>(ptr);
}

int record_slot() {
  static const int slot = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_record);
  return slot;
}

peer_record* record_of(SSL* ssl) {
  if (record_slot() < 0)
    return nullptr;
  auto* r = static_cast<peer_record*>(SSL_get_ex_data(ssl, record_slot()));
  if (r == nullptr) {
    r = new peer_record{address_of_socket(ssl)};
    if (SSL_set_ex_data(ssl, record_slot(), r) != 1) {
      delete r;
      return nullptr;
    }
  }
  return r;
}

/// OpenSSL's reason for the failure, without taking it off the error queue
/// (caf_openssl reads and clears the queue after us).
std::string reason_of(const SSL* ssl, int error) {
  std::string why;
  if (const unsigned long e = ERR_peek_last_error(); e != 0) {
    const char* r = ERR_reason_error_string(e);
    why = r != nullptr ? r : "OpenSSL error " + std::to_string(e);
  } else if (error == SSL_ERROR_SYSCALL || error == SSL_ERROR_ZERO_RETURN) {
    why = "the peer closed the connection during the handshake";
  } else {
    why = "handshake failed (SSL error " + std::to_string(error) + ")";
  }
  if (const long v = SSL_get_verify_result(ssl); v != X509_V_OK)
    why += std::string{" ("} + X509_verify_cert_error_string(v) + ")";
  return why;
}

void report(SSL* ssl, int ret, bool accepting) {
  const int error = SSL_get_error(ssl, ret);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE)
    return; // not finished yet: non-blocking sockets
  peer_record* record = record_of(ssl);
  if (record != nullptr && record->reported)
    return;
  if (record != nullptr)
    record->reported = true;
  const unsigned long n = ++failures;
  if (n > log_every_refusal_up_to && n % 100 != 0)
    return;
  std::string line =
      std::string{accepting ? "refused a TLS connection from " : "TLS handshake with "}
      + (record != nullptr ? record->address : address_of_socket(ssl))
      + (accepting ? ": " : " failed: ") + reason_of(ssl, error);
  if (n > log_every_refusal_up_to)
    line += " (" + std::to_string(n) + " failed handshakes so far; logging every 100th)";
  std::lock_guard<std::mutex> guard{sink_mutex};
  if (sink)
    sink(line);
}

template <class Fn>
Fn* next_definition(const char* name) {
  // RTLD_NEXT: the definition after this executable's, i.e. libssl's.
  return reinterpret_cast<Fn*>(::dlsym(RTLD_NEXT, name));
}

} // namespace

void set_tls_refusal_sink(std::function<void(const std::string&)> s) {
  std::lock_guard<std::mutex> guard{sink_mutex};
  sink = std::move(s);
}

} // namespace nettorrent

// The interposed definitions: C linkage and OpenSSL's exact signatures.
// Each empties the calling thread's OpenSSL error queue first, as OpenSSL
// requires before every TLS I/O call ("or SSL_get_error() will not work
// reliably"). caf_openssl reads and clears the queue only inside its log
// statements, which Debian's build compiles out; so after one failed
// handshake the queue kept the error, and the next SSL_read on any healthy
// connection of the same multiplexer thread that would merely block was
// taken for a failure, and that connection closed. Emptying the queue
// before each call leaves every failure of the call itself in place for
// caf_openssl's SSL_get_error. If dlsym finds no later definition (cannot
// happen while libssl is linked), the process stops with a message.
namespace {

/// Calls `real` (OpenSSL's definition) with an empty error queue.
template <class Fn, class... Args>
int call_real(Fn* real, Args... args) {
  if (real == nullptr) {
    // Cannot happen while libssl is linked; say so rather than fail every
    // connection silently.
    std::fputs("nettorrent: fatal: OpenSSL's TLS functions not found (dlsym)\n", stderr);
    std::abort();
  }
  ERR_clear_error();
  return real(args...);
}

} // namespace

extern "C" int SSL_accept(SSL* ssl) {
  static auto* const real = nettorrent::next_definition<int(SSL*)>("SSL_accept");
  nettorrent::record_of(ssl); // the address, while the peer is still connected
  const int ret = call_real(real, ssl);
  if (ret <= 0)
    nettorrent::report(ssl, ret, true);
  return ret;
}

extern "C" int SSL_connect(SSL* ssl) {
  static auto* const real = nettorrent::next_definition<int(SSL*)>("SSL_connect");
  nettorrent::record_of(ssl);
  const int ret = call_real(real, ssl);
  if (ret <= 0)
    nettorrent::report(ssl, ret, false);
  return ret;
}

extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static auto* const real = nettorrent::next_definition<int(SSL*, void*, int)>("SSL_read");
  return call_real(real, ssl, buf, num);
}

extern "C" int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto* const real = nettorrent::next_definition<int(SSL*, const void*, int)>("SSL_write");
  return call_real(real, ssl, buf, num);
}
