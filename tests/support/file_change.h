#pragma once
// A model file changed underneath a streamer: another program rewriting it moves its modification
// time, and the next read must fail with an error that says so, never return stale bytes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <string>

#include "runtime/session.h"
#include "util/error.h"

namespace strata::test {

// Moves the file's modification time as a rewrite would; *before keeps the old times.
inline void mark_rewritten(const std::string& path, struct stat* before = nullptr) {
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  if (before) *before = st;
  struct timeval times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(::utimes(path.c_str(), times), 0);
}

// Evaluates a few tokens over these sources and expects an Error saying the file changed.
inline void expect_changed_file_error(const Model& model, FfnSource* ffn, ExpertSource* experts) {
  SessionParams sp;
  sp.n_ctx = 16;
  Session s(model, sp);
  s.set_ffn_source(ffn);
  s.set_expert_source(experts);
  try {
    s.eval({1, 2, 3});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("changed"), std::string::npos) << e.what();
  }
}

}  // namespace strata::test
