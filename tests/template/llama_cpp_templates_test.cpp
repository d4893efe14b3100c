// Every chat template of llama.cpp's tree (models/templates/*.jinja and those inline in
// tests/test-chat-template.cpp) rendered with the conversations of tests/fixtures/templates, against
// what Debian's python3-jinja2 rendered from them under transformers' conventions.
//
// The reference (templates, their texts and jinja2's output or error per case) is written at test
// time by tests/py/test_fidelity_template.py (scripts/gen_template_fixtures.py --tree), which runs
// this test with STRATA_TEMPLATE_REFERENCE set; without it the test skips.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "support/paths.h"
#include "template/template.h"
#include "util/error.h"

namespace strata::jinja {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string first_difference(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 40 ? i - 40 : 0;
  return "at byte " + std::to_string(i) + ": want '" + want.substr(from, 100) + "', got '" + got.substr(from, 100) +
         "'";
}

TEST(LlamaCppTemplates, RenderAsJinja2Does) {
  const char* ref = std::getenv("STRATA_TEMPLATE_REFERENCE");
  if (!ref)
    GTEST_SKIP() << "STRATA_TEMPLATE_REFERENCE not set (python3 -m pytest tests/py/test_fidelity_template.py "
                    "-k llama_cpp writes it and runs this test)";
  const auto reference = nlohmann::ordered_json::parse(read_all(ref));
  const auto convs = nlohmann::ordered_json::parse(read_all(test::fixtures_dir() + "/templates/conversations.json"));
  set_fixed_now(1721995200);  // 2024-07-26 12:00:00, the reference's strftime_now clock

  struct Tally {
    int total = 0, agree = 0;
    std::string first_miss;
  };
  std::map<std::string, Tally> by_template;
  for (const auto& c : reference["cases"]) {
    const std::string name = c["template"].get<std::string>();
    const std::string label = name + " / " + c["conversation"].get<std::string>() +
                              (c["add_generation_prompt"].get<bool>() ? " / gen" : " / no-gen");
    const auto& conv = convs["conversations"][c["conversation"].get<std::string>()];
    const nlohmann::ordered_json tools = conv.value("tools", false) ? convs["tools"] : nlohmann::ordered_json();
    std::string got, err;
    try {
      got = render_chat_template(reference["templates"][name].get<std::string>(), conv["messages"], tools,
                                 c["add_generation_prompt"].get<bool>(), c["bos_token"].get<std::string>(),
                                 c["eos_token"].get<std::string>());
    } catch (const strata::Error& e) {
      err = e.what();
    }
    std::string miss;
    if (c.contains("error")) {
      if (err.empty()) miss = "jinja2 raised " + c["error"].get<std::string>() + " but we rendered";
    } else if (!err.empty()) {
      miss = "we raised: " + err;
    } else if (got != c["output"].get<std::string>()) {
      miss = first_difference(c["output"].get<std::string>(), got);
    }
    Tally& t = by_template[name];
    ++t.total;
    if (miss.empty())
      ++t.agree;
    else if (t.first_miss.empty())
      t.first_miss = label + ": " + miss;
  }
  set_fixed_now(0);

  int n_pass = 0;
  for (const auto& [name, t] : by_template) {
    const bool ok = t.agree == t.total;
    n_pass += ok;
    std::cout << "[ template ] " << name << ": " << (ok ? "pass" : "FAIL") << " " << t.agree << "/" << t.total << "\n";
    if (!ok) ADD_FAILURE() << t.first_miss;
  }
  std::cout << "[ template ] " << by_template.size() << " templates: " << n_pass << " render as jinja2 "
            << reference.value("jinja2_version", "?") << " does in every case, " << by_template.size() - size_t(n_pass)
            << " differ\n";
  EXPECT_GT(by_template.size(), 50u);
}

}  // namespace
}  // namespace strata::jinja
