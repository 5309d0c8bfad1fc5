// rogue_peer: connects to a node's port the way an attacker or a
// misconfigured peer would, and reports whether the node refused it.
//
//   rogue_peer tls HOST PORT [CERT KEY]   TLS client; without CERT/KEY it
//                                         offers no certificate
//   rogue_peer plain HOST PORT            a BASP client handshake over plain TCP
//   rogue_peer random HOST PORT [SEED]    64 KiB of seeded random bytes
//   rogue_peer basp-4g HOST PORT          a BASP header announcing a payload
//                                         of 4 GiB - 1 (the most its 32-bit
//                                         length can say), over plain TCP
//
// Prints one line and exits 0 if the node refused (closed the connection or
// failed the TLS handshake), 3 if it admitted the peer (its BASP server
// handshake arrived), 4 if the node neither answered nor closed in 5 s,
// 2 on a usage or local error. The positive control of the tests is this
// tool with a valid certificate: it must report "admitted".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int refused = 0;
constexpr int local_error = 2;
constexpr int admitted = 3;
constexpr int no_answer = 4;

int say(int code, const std::string& what) {
  std::printf("%s\n", what.c_str());
  std::fflush(stdout);
  return code;
}

/// A TCP connection to host:port with 5 s send/receive timeouts; -1 on failure.
int connect_to(const std::string& host, int port, std::string& why) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (fd < 0 || ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    why = "bad address " + host;
    return -1;
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    why = "cannot connect to " + host + ":" + std::to_string(port) + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  if (e == 0)
    return "no OpenSSL reason";
  const char* r = ERR_reason_error_string(e);
  return r != nullptr ? r : "OpenSSL error " + std::to_string(e);
}

int tls_peer(const std::string& host, int port, const char* cert, const char* key) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr)
    return say(local_error, "error: no TLS context");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr); // get as far as the node's check
  if (cert != nullptr
      && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
          || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1))
    return say(local_error, std::string{"error: cannot load "} + cert + " / " + key);
  std::string why;
  const int fd = connect_to(host, port, why);
  if (fd < 0)
    return say(local_error, "error: " + why);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  int code = no_answer;
  std::string what;
  if (SSL_connect(ssl) != 1) {
    code = refused;
    what = "refused during the TLS handshake: " + openssl_reason();
  } else {
    // TLS 1.3: the client finishes first; the node checks the client's
    // certificate after, and either sends its BASP handshake or an alert.
    char buf[256];
    const int n = SSL_read(ssl, buf, sizeof buf);
    const int e = SSL_get_error(ssl, n);
    if (n > 0) {
      code = admitted;
      what = "admitted: the node sent " + std::to_string(n) + " bytes of BASP over TLS";
    } else if (e == SSL_ERROR_SSL) {
      code = refused;
      what = "refused after the TLS handshake: " + openssl_reason();
    } else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno != EAGAIN)) {
      code = refused;
      what = "refused: the node closed the TLS connection";
    } else {
      what = "no answer in 5 s over TLS";
    }
  }
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(ctx);
  return say(code, what);
}

/// Sends `bytes` over plain TCP and waits for the node to close.
int plain_peer(const std::string& host, int port, const std::vector<unsigned char>& bytes,
               const std::string& label) {
  std::string why;
  const int fd = connect_to(host, port, why);
  if (fd < 0)
    return say(local_error, "error: " + why);
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0)
      break; // the node closed while we sent: refused below
    sent += static_cast<std::size_t>(n);
  }
  std::size_t got = 0;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
      continue;
    }
    const int e = errno;
    ::close(fd);
    if (n == 0 || e == ECONNRESET || e == EPIPE)
      return say(refused, "refused: the node closed the connection after " + label + " ("
                              + std::to_string(sent) + " bytes sent, " + std::to_string(got)
                              + " received)");
    return say(no_answer, "no answer in 5 s after " + label + ": " + std::strerror(e));
  }
}

/// A BASP header (CAF 0.17: 32 bytes, network byte order): operation, two
/// padding bytes, flags, payload length, operation data, source and
/// destination actor ids.
std::vector<unsigned char> basp_header(std::uint8_t operation, std::uint32_t payload_len) {
  std::vector<unsigned char> h(32, 0);
  h[0] = operation;
  for (int i = 0; i < 4; ++i)
    h[4 + i] = static_cast<unsigned char>(payload_len >> (24 - 8 * i));
  h[15] = 1; // operation data: BASP version 1 (bytes 8-15)
  return h;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 4)
    return say(local_error, "usage: rogue_peer tls|plain|random|basp-4g HOST PORT [...]");
  const std::string mode = argv[1];
  const std::string host = argv[2];
  const int port = std::atoi(argv[3]);
  if (mode == "tls")
    return tls_peer(host, port, argc > 5 ? argv[4] : nullptr, argc > 5 ? argv[5] : nullptr);
  if (mode == "plain") {
    // client_handshake (operation 1) with a small payload of zeros.
    auto bytes = basp_header(1, 64);
    bytes.resize(bytes.size() + 64, 0);
    return plain_peer(host, port, bytes, "a plain-TCP BASP client handshake");
  }
  if (mode == "random") {
    std::mt19937 gen{argc > 4 ? static_cast<unsigned>(std::atoi(argv[4])) : 1u};
    std::vector<unsigned char> bytes(64 * 1024);
    for (auto& b : bytes)
      b = static_cast<unsigned char>(gen());
    return plain_peer(host, port, bytes, "64 KiB of random bytes");
  }
  if (mode == "basp-4g")
    return plain_peer(host, port, basp_header(1, 0xFFFFFFFFu),
                      "a BASP header announcing 4 GiB");
  return say(local_error, "unknown mode " + mode);
}
