// Logging of refused TLS handshakes.
//
// CAF 0.17's caf_openssl closes a connection whose handshake fails without
// telling the application, so a node could not say that it refused a peer,
// or why. This file defines SSL_accept and SSL_connect in the executable:
// the dynamic linker binds caf_openssl's calls to them (symbols of the
// executable come first), and they call OpenSSL's own through
// dlsym(RTLD_NEXT), then report a handshake that failed for good — peer
// address, OpenSSL's reason and the certificate verification result — to
// the sink installed here. The handshake itself is untouched: no state is
// changed and OpenSSL's error queue is only peeked at.
#pragma once

#include <functional>
#include <string>

namespace nettorrent {

/// Where refused handshakes are reported (one line each, no newline);
/// replaces the previous sink. An empty function turns reporting off.
void set_tls_refusal_sink(std::function<void(const std::string&)> sink);

/// Handshakes refused so far in this process (accepting and connecting).
unsigned long tls_refusals();

} // namespace nettorrent
