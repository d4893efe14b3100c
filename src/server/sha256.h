#pragma once
// SHA-256 (FIPS 180-4) of a file, for the model digests of /api/tags and /api/show.
#include <atomic>
#include <cstdint>
#include <string>

namespace strata::server {

// The lower-case hex SHA-256 of the file's bytes. Throws internal_error (errors.h) when it cannot be read,
// or when *stop becomes true (checked between 1 MiB chunks). The bytes read leave the page cache
// behind them: hashing a model must not push out what a memory budget holds.
std::string sha256_file(const std::string& path, const std::atomic<bool>* stop = nullptr);
// The lower-case hex SHA-256 of bytes (for tests and small inputs).
std::string sha256_hex(const void* data, size_t n_bytes);

}  // namespace strata::server
