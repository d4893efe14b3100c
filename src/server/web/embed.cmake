# Turns a file into a C++ header holding its bytes, so that `strata serve` carries its web page
# inside the binary (no file is looked up at run time). Run at build time:
#   cmake -DINPUT=chat.html -DOUTPUT=chat_html.h -DNAME=chat_html -P embed.cmake
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){24})" "\\1\n" bytes "${bytes}")
get_filename_component(source "${INPUT}" NAME)
file(WRITE "${OUTPUT}.tmp"
  "// Generated at build time from ${source} by embed.cmake; do not edit.\n"
  "#pragma once\n#include <cstddef>\n\nnamespace strata::server::web {\n\n"
  "inline constexpr unsigned char ${NAME}[] = {\n${bytes}};\n"
  "inline constexpr size_t ${NAME}_bytes = sizeof ${NAME};\n\n}  // namespace strata::server::web\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
