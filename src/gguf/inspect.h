#pragma once
// `strata inspect`: a GGUF file's header, metadata, tensor table and totals per type, as text.
#include <ostream>

#include "gguf/gguf.h"

namespace strata::gguf {

// show_all_metadata prints arrays and strings in full; otherwise long ones are abbreviated.
void print_inspect(const File& file, std::ostream& out, bool show_all_metadata);

}  // namespace strata::gguf
