#pragma once
// Errors are values with context: what was being done, on which file/tensor/field, what was expected.
#include <stdexcept>
#include <string>

namespace strata {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace strata
