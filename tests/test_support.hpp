// Helpers every test binary shares: substring expectations, catching a
// nettorrent::error's message, and whole-file I/O.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <fstream>
#include <iterator>
#include <string>

#include "nettorrent/error.hpp"

/// Expects `haystack` (anything a std::string can be built from) to contain `needle`.
#define EXPECT_CONTAINS(haystack, needle)                                                          \
  EXPECT_NE(std::string{haystack}.find(needle), std::string::npos)                                 \
      << "\"" << (haystack) << "\" does not contain \"" << (needle) << "\""

namespace test_support {

/// Runs `f` and returns the message of the nettorrent::error it throws; a
/// test failure if it throws something else or nothing.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const nettorrent::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected nettorrent::error, got std::exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected nettorrent::error, nothing was thrown";
  return {};
}

/// The whole content of a file ("" if unreadable).
inline std::string read_file(const std::string& path) {
  std::ifstream is{path, std::ios::binary};
  return std::string{std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}

/// Replaces a file's content with `bytes`; a test failure if it cannot.
inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream os{path, std::ios::binary | std::ios::trunc};
  os.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(os.good()) << "cannot write " << path;
}

} // namespace test_support
