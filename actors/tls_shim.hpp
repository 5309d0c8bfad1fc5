// A shim between caf_openssl and OpenSSL: the two things CAF 0.17 gets
// wrong or leaves out.
//
// tls_shim.cpp defines SSL_accept, SSL_connect, SSL_read and SSL_write in
// the executable; the dynamic linker binds caf_openssl's calls to them
// (symbols of the executable come first), and they call OpenSSL's own
// through dlsym(RTLD_NEXT).
// - Each empties the thread's OpenSSL error queue before the call, as
//   OpenSSL requires. caf_openssl does not (it clears the queue only in log
//   statements that Debian's build compiles out), so one refused handshake
//   left an error behind that made the next would-block read of a healthy
//   connection look fatal: a rogue peer could cut a node off its cluster.
// - A handshake that fails for good is reported — peer address, OpenSSL's
//   reason, the certificate verification result — to the sink installed
//   here: caf_openssl closes such a connection without telling anyone.
// Neither changes what a handshake or a read decides.
#pragma once

#include <functional>
#include <string>

namespace nettorrent {

/// Where refused handshakes are reported (one line each, no newline);
/// replaces the previous sink. An empty function turns reporting off. The
/// sink runs on the network thread under a lock: it must not block for
/// long, nor call set_tls_refusal_sink.
void set_tls_refusal_sink(std::function<void(const std::string&)> sink);

} // namespace nettorrent
