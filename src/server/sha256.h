#pragma once
// SHA-256 (FIPS 180-4) of a file, for the model digests of /api/tags and /api/show.
#include <cstdint>
#include <string>

namespace strata::server {

// The lower-case hex SHA-256 of the file's bytes. Throws HttpError 500 when it cannot be read.
std::string sha256_file(const std::string& path);
// The lower-case hex SHA-256 of bytes (for tests and small inputs).
std::string sha256_hex(const void* data, size_t n_bytes);

}  // namespace strata::server
